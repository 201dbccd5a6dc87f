"""Child processes that do not outlive the process that started them (Linux), used by the stack runner and tests.

Two ties, both set by ``child_options`` on every process the local stack starts (servers and services alike):

* ``PR_SET_PDEATHSIG``: the kernel sends the child a signal (its own graceful-stop one: SIGTERM, SIGINT for
  PostgreSQL's fast shutdown) when the thread that started it dies, even by SIGKILL. It does not pass on to the
  child's own children (granian's workers, PostgreSQL's backends): those stop with their parent.
* The runner's lock on its data folder (``infra/stack/stack_lock.py``), passed down as an open file: a ``flock``
  lock belongs to the open file, so it stays held while any process of the stack lives, grandchildren included
  (granian forks its workers, PostgreSQL its backends; both keep inherited descriptors). A new runner therefore
  cannot start servers on the data while anything of an old stack is still running, and finds what is left by
  the file they hold open.

The signal is tied to the starting *thread*: a child started from a thread that later ends would be stopped with
it. So it is asked for only from the main thread, whose end is the process's.
"""

import ctypes
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1
_inherited_fd: int | None = None


def pass_to_children(fd: int | None) -> None:
    """Every child started from now on keeps ``fd`` open (None: stop passing one)."""
    global _inherited_fd
    _inherited_fd = fd


def child_options(death_signal: signal.Signals = signal.SIGTERM) -> dict[str, Any]:
    """``subprocess.Popen`` arguments tying the child to this process (see the module's docstring)."""
    options: dict[str, Any] = {}
    if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
        options["preexec_fn"] = _die_with_parent(death_signal)
    if _inherited_fd is not None:
        options["pass_fds"] = (_inherited_fd,)
    return options


@functools.cache
def _prctl() -> Any:
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent(death_signal: signal.Signals) -> Callable[[], None]:
    prctl = _prctl()  # resolved before the fork: between fork and exec the child should do as little as it can
    parent = os.getpid()

    def preexec() -> None:
        # Runs in the child after the switch of user (subprocess sets the uid first), which would clear the setting.
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the setting took: no signal will come
            os._exit(1)

    return preexec
