"""``shipskip run`` as a test starts it: a real runner process with its embedded servers, on a data folder of its own
and free ports, and what the tests look at (its processes, its output, its stack file)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.stack.servers import free_port
from infra.stack.stack_lock import LOCK_NAME, read_holder
from tests.faults.ingest import LOAD_ENV, TOOLS
from tests.stack.test_up_workers import descendants
from tests.support import run_cli, wait_until

LLAMA = next(iter(TOOLS))


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Runner:
    process: subprocess.Popen[bytes]
    data: Path
    stack_file: Path
    output_path: Path
    env: dict[str, str]
    votes_port: int
    read_port: int

    @property
    def votes_url(self) -> str:
        return f"http://127.0.0.1:{self.votes_port}"

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def tree(self) -> dict[int, str]:
        """Every live process under the runner, with its start time."""
        return descendants(self.process.pid)

    def pids(self, fragment: str) -> list[int]:
        """The runner's live descendants whose command line holds ``fragment``."""
        return sorted(pid for pid in self.tree() if fragment in command_line(pid))

    def projector_pids(self) -> list[int]:
        return self.pids("services.cli projector")

    def granian_main(self, port: int) -> int:
        """The granian main process serving ``port`` (its workers are its children, with the same command line)."""
        pids = self.pids(f"--port {port} ")
        mains = [pid for pid in pids if _parent(pid) == self.process.pid]
        assert len(mains) == 1, (pids, mains)
        return mains[0]

    def stop(self, how: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(how)
        return self.process.wait(timeout)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def runner_env(folder: Path, **extra: str) -> tuple[dict[str, str], int, int]:
    # Without RUST_BACKTRACE (set on some machines): granian would end its log with a long Rust backtrace after the
    # error, where a test reads the error at the end of the log.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "GRANIAN_", "RUST_BACKTRACE"))}
    votes_port, read_port = free_port(), free_port()
    env.update(
        {
            "SHIPSKIP_VOTES_PORT": str(votes_port),
            "SHIPSKIP_TALLY_PORT": str(read_port),
            "SHIPSKIP_PROJECTOR_PORT": "0",
            "SHIPSKIP_STACK_FILE": str(folder / "stack.json"),
            "SHIPSKIP_LOG_FORMAT": "text",
            **LOAD_ENV,
            **extra,
        }
    )
    return env, votes_port, read_port


def launch(
    folder: Path, data: Path, env: dict[str, str], name: str = "run", *, closed_stdout: bool = False
) -> subprocess.Popen[bytes]:
    """The runner, its output in ``<name>.out``; with ``closed_stdout``, only its stderr there, and its stdout a pipe
    nobody reads any more (``make run | head -3`` once head has exited): every write to it fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with (folder / f"{name}.out").open("wb") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "services.cli", "run", "--data", str(data)],
                env=env,
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=write_end if closed_stdout else sink,
                stderr=subprocess.STDOUT if not closed_stdout else sink,
                start_new_session=True,  # its own process group, as a terminal's foreground job
            )
    finally:
        os.close(write_end)


def new_data_folder() -> Path:
    # Not under pytest's 0700 base folder: under root, PostgreSQL's account must reach the data.
    data = Path(tempfile.mkdtemp(prefix="shipskip-runner-"))
    data.chmod(0o755)
    return data


@contextmanager
def running(folder: Path, data: Path | None = None, *, closed_stdout: bool = False, **extra: str) -> Iterator[Runner]:
    """``shipskip run`` on ``data`` (a new folder unless given), up and serving; stopped at the end."""
    own_data = data is None
    data = data or new_data_folder()
    env, votes_port, read_port = runner_env(folder, **extra)
    process = launch(folder, data, env, closed_stdout=closed_stdout)
    runner = Runner(process, data, folder / "stack.json", folder / "run.out", env, votes_port, read_port)

    def serving() -> bool:
        if process.poll() is not None:
            return True
        if not closed_stdout:
            return "shipskip is running" in runner.output()
        holder = read_holder(data / LOCK_NAME)  # says where it serves once it does (the banner goes nowhere here)
        return holder is not None and holder.votes_url is not None

    try:
        wait_until(serving, timeout=120)
        assert process.poll() is None, runner.output()
        yield runner
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()  # its processes stop with it (infra/stack/lifeline.py)
                process.wait()
        if own_data:
            remove_data_folder(data)


def remove_data_folder(data: Path) -> None:
    # The last processes of a killed stack may still be writing for a moment.
    for _ in range(50):
        with contextlib.suppress(OSError):
            shutil.rmtree(data)
            return
        time.sleep(0.1)
    shutil.rmtree(data, ignore_errors=True)


def cast_vote(votes_url: str, verdict: str = "ship", timeout: float = 60.0) -> None:
    """One vote by a new voter, tried again while a restarted service or server comes back."""
    accepted = False

    def vote() -> bool:
        nonlocal accepted
        try:
            with httpx.Client(timeout=10) as client:
                response = client.post(votes_url + "/v1/voters")
                if response.status_code != 201:
                    return False
                answer = client.post(
                    f"{votes_url}/v1/comparisons/{LLAMA}/votes",
                    json={"tool_id": TOOLS[LLAMA][0], "verdict": verdict},
                    headers={"X-Voter-Token": response.json()["voter_token"]},
                )
        except httpx.HTTPError:
            return False
        assert answer.status_code in (202, 503), answer.text
        accepted = answer.status_code == 202
        return accepted

    wait_until(vote, timeout=timeout, interval=0.2)


def ballots_counted(runner: Runner) -> int:
    status = run_cli(runner.env, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    ballots: int = json.loads(status.stdout)["ballots"]
    return ballots
