"""Keeping the local stack's processes running: restart what crashes, with backoff; give up on a crash loop.

The stack runner (``infra/stack/local.py``) hands each process to a ``Supervisor`` as a ``Unit`` (a service: one
granian main process with its workers, or a projector; or one embedded server) and calls ``check()`` a few times a
second. A unit that exits is restarted after 0.5 s, then 1, 2, 4 ... up to 30 s when it keeps crashing; once it
has stayed up for ``stable_s`` the next crash starts again at 0.5 s. A unit that crashes ``burst`` times within
``window_s`` is broken, not unlucky: ``check()`` raises ``GaveUp`` naming it, why, and the end of its log, and the
runner stops the stack. Each crash is one line: which unit, its exit status or signal, when it restarts.

An exit that is not a crash (a projector whose partition layout a rebuild replaced) is the runner's to handle: it
is asked first (``on_exit``), and the unit is restarted only when the runner says it did not handle it.
"""

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from infra.stack.processes import describe_exit


class UnitStartError(RuntimeError):
    """A unit could not be started again (counted as a crash)."""


class Unit(Protocol):
    @property
    def title(self) -> str: ...

    @property
    def log_path(self) -> Path: ...

    def start(self) -> None:
        """Start it (again); ``UnitStartError`` when it cannot."""

    def exit_status(self) -> int | None:
        """None while it runs; else how it ended (a Popen return code: negative for a signal)."""

    def stop(self) -> None: ...

    def log_tail(self) -> str: ...


@dataclass(frozen=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    stable_s: float = 30.0
    """Up this long, a unit's next crash is a first one again (its restart delay back to ``first_delay_s``)."""
    burst: int = 5
    window_s: float = 60.0
    """``burst`` crashes of one unit within ``window_s``: it keeps crashing, and the stack stops."""


class GaveUp(Exception):
    """A unit keeps crashing; the message says which, how, and shows the end of its log."""


@dataclass
class _Watch:
    unit: Unit
    started_at: float = field(default_factory=time.monotonic)
    streak: int = 0
    """Crashes since it last stayed up ``stable_s``: the exponent of the next delay."""
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        say: Callable[[str], None],
        on_exit: Callable[[Unit, int], bool] | None = None,
        policy: RestartPolicy | None = None,
    ) -> None:
        self._say = say
        self._on_exit = on_exit
        self.policy = policy or RestartPolicy()
        self._watches: list[_Watch] = []

    @property
    def units(self) -> list[Unit]:
        return [watch.unit for watch in self._watches]

    def watch(self, unit: Unit) -> None:
        """Supervise ``unit``, started already."""
        self._watches.append(_Watch(unit))

    def launch(self, unit: Unit) -> None:
        """Start ``unit`` and supervise it; one that cannot start is a crash (tried again later)."""
        watch = _Watch(unit)
        self._watches.append(watch)
        try:
            unit.start()
        except UnitStartError as exc:
            self._crashed(watch, f"could not start ({str(exc).splitlines()[0]})")

    def forget(self, unit: Unit) -> None:
        self._watches = [watch for watch in self._watches if watch.unit is not unit]

    def check(self) -> None:
        """One look at every unit: restart those due, note those that exited. ``GaveUp`` on a crash loop."""
        for watch in list(self._watches):
            if watch not in self._watches:  # replaced by on_exit during this pass
                continue
            now = time.monotonic()
            if watch.restart_at is not None:
                if now >= watch.restart_at:
                    watch.restart_at = None
                    watch.started_at = now
                    try:
                        watch.unit.start()
                    except UnitStartError as exc:
                        self._crashed(watch, f"could not start ({str(exc).splitlines()[0]})")
                continue
            status = watch.unit.exit_status()
            if status is None:
                if watch.streak and now - watch.started_at >= self.policy.stable_s:
                    watch.streak = 0
                continue
            if self._on_exit is not None and self._on_exit(watch.unit, status):
                continue
            self._crashed(watch, describe_exit(status))

    def _crashed(self, watch: _Watch, how: str) -> None:
        now = time.monotonic()
        policy = self.policy
        up_s = now - watch.started_at
        if up_s >= policy.stable_s:
            watch.streak = 0
        watch.streak += 1
        watch.crashes.append(now)
        while watch.crashes and now - watch.crashes[0] > policy.window_s:
            watch.crashes.popleft()
        unit = watch.unit
        if len(watch.crashes) >= policy.burst:
            span = now - watch.crashes[0]
            raise GaveUp(
                f"shipskip: {unit.title} keeps crashing ({len(watch.crashes)} times in {span:.0f} s; the last time it"
                f" {how} after {up_s:.1f} s): stopping the stack. The end of {unit.log_path}:\n{unit.log_tail()}"
            )
        delay = min(policy.first_delay_s * 2 ** (watch.streak - 1), policy.max_delay_s)
        self._say(f"shipskip: {unit.title} {how} after {up_s:.1f} s; restarting it in {delay:g} s")
        watch.restart_at = now + delay
