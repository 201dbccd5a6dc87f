"""One stack per data folder: the runner's lock file, ``<data>/run.lock``, taken before anything starts.

The lock is ``flock(LOCK_EX | LOCK_NB)`` on the file, which holds the holder's pid and, once it serves, its API
addresses (JSON). The kernel frees a flock lock when the last descriptor of its open file closes, so a killed
runner's lock is free again with no clean-up, except that the runner passes the descriptor to every process it
starts (``infra/stack/lifeline.py``): the lock stays held until the last of them is gone too. A new runner then:

* finds the holder alive (pid and start time): refuses, naming it (``StackBusy``), having touched nothing;
* finds the holder dead but the lock held: processes of the killed runner's stack are still stopping (the kernel
  signalled them when it died). It waits for them a little, then SIGKILLs whatever still holds the file open (found
  in /proc, so PostgreSQL's processes under their own account included), and takes the lock.
"""

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

LOCK_NAME = "run.lock"
LEFTOVER_GRACE_S = 10.0
"""How long a new runner waits for a killed runner's processes to stop by themselves before it kills them."""


class StackBusy(Exception):
    """Another runner's stack holds the data folder (the message names it), or its processes cannot be stopped."""


class Holder(msgspec.Struct, omit_defaults=True):
    pid: int
    started: str
    """The process's start time (clock ticks after boot, /proc/PID/stat): a reused pid is not the holder."""
    data: str
    votes_url: str | None = None
    read_url: str | None = None

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.started

    def describe(self) -> str:
        if self.votes_url is None or self.read_url is None:
            return f"runner pid {self.pid}, still starting, data {self.data}"
        return f"runner pid {self.pid}, votes API {self.votes_url}, read API {self.read_url}, data {self.data}"


def process_start_time(pid: int) -> str | None:
    """A live (not zombie) process's start time; None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else fields[19]


def read_holder(path: Path) -> Holder | None:
    """What the lock file says (None: missing, empty or being written)."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=Holder)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def running_holder(path: Path) -> Holder | None:
    """The live runner that holds the lock file at ``path``, if one does (for a stack file naming another folder)."""
    holder = read_holder(path)
    return holder if holder is not None and holder.alive() and _is_locked(path) else None


def processes_holding(path: Path) -> set[int]:
    """The processes with ``path`` open (other than this one), from /proc."""
    try:
        target = path.stat()
    except OSError:
        return set()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    st = fd.stat()  # follows the link to the open file
                    if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                        found.add(int(entry.name))
                        break
    return found


class StackLock:
    """This runner's hold on a data folder; ``fd`` is what its children must keep open."""

    def __init__(self, path: Path, fd: int, holder: Holder) -> None:
        self.path = path
        self.fd = fd
        self.holder = holder

    @classmethod
    def acquire(
        cls, data_dir: Path, *, grace_s: float = LEFTOVER_GRACE_S, say: Callable[[str], None] = print
    ) -> "StackLock":
        """Take the data folder's lock, or raise ``StackBusy`` naming its live holder (see the module docstring)."""
        data_dir = data_dir.absolute()
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            if not _try_lock(fd):
                _wait_out_leftovers(path, fd, grace_s, say)
            started = process_start_time(os.getpid())
            assert started is not None
            lock = cls(path, fd, Holder(os.getpid(), started, str(data_dir)))
            lock._write()
            return lock
        except BaseException:
            os.close(fd)
            raise

    def serving(self, votes_url: str, read_url: str) -> None:
        """Record where the stack serves, for the message a second runner prints."""
        self.holder = msgspec.structs.replace(self.holder, votes_url=votes_url, read_url=read_url)
        self._write()

    def release(self) -> None:
        """Close this process's descriptor (the lock is free once no process of the stack holds it)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _write(self) -> None:
        # Written in place (the lock belongs to this file): a reader seeing a half-written file reads it again.
        data = msgspec.json.encode(self.holder)
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_locked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared lock: an exclusive holder refuses it
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if it was granted
    return False


def _wait_out_leftovers(path: Path, fd: int, grace_s: float, say: Callable[[str], None]) -> None:
    """The lock is held: refuse if its runner lives; else wait for, then kill, what its stack left running."""
    started = time.monotonic()
    deadline = started + grace_s
    announced = False
    holder: Holder | None = None
    while True:
        holder = read_holder(path) or holder  # None while a starting runner writes it: keep the last one read
        if holder is not None and holder.alive():
            raise StackBusy(f"a stack is already running on this data folder: {holder.describe()}")
        if _try_lock(fd):
            return
        if time.monotonic() >= deadline:
            break
        if not announced and holder is not None and time.monotonic() - started > 0.5:
            left = processes_holding(path)
            say(
                f"shipskip: the runner that held {holder.data} (pid {holder.pid}) is gone; waiting up to"
                f" {grace_s:.0f} s for the {len(left)} processes it left to stop"
            )
            announced = True
        time.sleep(0.1)
    left = processes_holding(path)
    say(f"shipskip: stopping what is left of the earlier stack (SIGKILL to pids {', '.join(map(str, sorted(left)))})")
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if _try_lock(fd):
            return
        time.sleep(0.05)
    still = processes_holding(path)
    raise StackBusy(
        f"processes of an earlier stack still hold {path} (pids {', '.join(map(str, sorted(still))) or 'unknown'}):"
        " stop them first"
    )
