"""The supervisor's restart policy on real (tiny) processes, with its times scaled down: the delay doubles while a
unit keeps crashing, starts over once it stayed up, the stack gives up on a burst of crashes naming the unit with
its log, and an exit the runner handles is not a crash. ``test_runner.py`` shows the same through ``shipskip run``."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.stack.supervisor import GaveUp, RestartPolicy, Supervisor, Unit
from tests.support import wait_until


class Script:
    """A Python one-liner as a unit: it prints a line to its log and exits with ``status`` after ``run_s``."""

    def __init__(self, folder: Path, run_s: float, status: int = 3) -> None:
        self.log_path = folder / "script.log"
        self.code = f"import time; print('started', flush=True); time.sleep({run_s}); raise SystemExit({status})"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def title(self) -> str:
        return "script"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-c", self.code], stdout=log, stderr=subprocess.STDOUT)

    def exit_status(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def log_tail(self) -> str:
        return self.log_path.read_text()[-200:]


def supervise(supervisor: Supervisor, until_s: float) -> None:
    deadline = time.monotonic() + until_s
    while time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.01)


def test_the_delay_doubles_while_a_unit_keeps_crashing_then_the_stack_gives_up_with_its_log(tmp_path: Path) -> None:
    said: list[str] = []
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=0.15, stable_s=5.0, burst=5, window_s=30.0)
    supervisor = Supervisor(said.append, policy=policy)
    unit = Script(tmp_path, run_s=0.0)
    supervisor.launch(unit)
    with pytest.raises(GaveUp) as gave_up:
        supervise(supervisor, until_s=30)
    assert [line.rsplit(" in ", 1)[1] for line in said] == ["0.05 s", "0.1 s", "0.15 s", "0.15 s"]
    assert all(line.startswith("shipskip: script exited with status 3 after ") for line in said), said
    assert unit.starts == 5
    message = str(gave_up.value)
    assert message.startswith("shipskip: script keeps crashing (5 times in ")
    assert "the last time it exited with status 3" in message
    assert message.endswith("started\n" * 5)  # the end of its log


def test_a_unit_that_stayed_up_starts_its_backoff_again_and_is_never_given_up(tmp_path: Path) -> None:
    said: list[str] = []
    # Each run lasts longer than stable_s; burst crashes never fit in the window (as 5 in 60 s with 30 s runs).
    policy = RestartPolicy(first_delay_s=0.05, stable_s=0.3, burst=3, window_s=0.5)
    supervisor = Supervisor(said.append, policy=policy)
    unit = Script(tmp_path, run_s=0.4)  # up longer than stable_s each time
    supervisor.launch(unit)
    try:
        supervise(supervisor, until_s=2.5)
    finally:
        unit.stop()
    assert len(said) >= 3, said  # more crashes than the burst, each after a stable run
    assert all(line.endswith("restarting it in 0.05 s") for line in said), said


def test_an_exit_the_runner_handles_is_not_a_crash(tmp_path: Path) -> None:
    said: list[str] = []
    handled: list[tuple[Unit, int]] = []

    def on_exit(unit: Unit, status: int) -> bool:
        handled.append((unit, status))
        supervisor.forget(unit)  # as the runner does with a projector of a replaced layout
        return True

    supervisor = Supervisor(said.append, on_exit=on_exit)
    unit = Script(tmp_path, run_s=0.0)
    supervisor.launch(unit)

    def exited() -> bool:
        supervisor.check()
        return bool(handled)

    wait_until(exited, timeout=10)
    assert handled == [(unit, 3)]
    assert supervisor.units == []
    assert said == []
    assert unit.starts == 1
