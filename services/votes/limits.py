"""Rate limits as "N per period, in bursts of B", and the GCRA arithmetic behind them.

GCRA (the generic cell rate algorithm) keeps one number per subject: the theoretical arrival time (TAT) of the
next request. A request is let through when, after adding one emission interval (period / N) to the TAT, the TAT
is at most ``burst`` intervals ahead of now. So B requests may pass at once, then one per interval.

The shared limiter runs the same arithmetic inside Redis (``admission.lua``); ``LocalLimiter`` runs it here, per
process, only while Redis cannot be reached. All times are whole microseconds, as in the Lua script.
"""

import math
import re
import time
from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from services.shared.config import ConfigError

_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*(s|m|min|h|d)?\s*(?:,\s*(\d+)\s*)?$")


class Limit(msgspec.Struct, frozen=True):
    """``count`` requests per ``period_s`` seconds, at most ``burst`` at once."""

    name: str
    """The policy name clients see in the RateLimit fields and in a 429's detail."""
    count: int
    period_s: int
    burst: int

    @property
    def interval_us(self) -> int:
        return max(1, round(self.period_s * 1_000_000 / self.count))

    def describe(self) -> str:
        return f"{self.count} per {self.period_s} s, bursts of {self.burst}"


def parse_limit(name: str, variable: str, spec: str) -> Limit:
    """``"30/1m,10"``: 30 per minute in bursts of at most 10 (the burst defaults to the count)."""
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigError(f"{variable}={spec!r} is not a limit like 30/1m,10 (30 per minute, bursts of 10)")
    count, amount, unit, burst = match.groups()
    limit = Limit(
        name=name,
        count=int(count),
        period_s=int(amount) * _UNITS[unit or ""],
        burst=int(burst) if burst is not None else int(count),
    )
    if limit.count < 1 or limit.period_s < 1 or limit.burst < 1:
        raise ConfigError(f"{variable}={spec!r}: the count, the period and the burst must all be at least 1")
    return limit


class LimitState(NamedTuple):
    """Where one limit stands after a request: what is left, and when it is full again or may be retried."""

    limit: Limit
    remaining: int
    reset_us: int
    """Until the whole burst is available again."""
    retry_us: int
    """Until the refused request would pass; 0 when it passed."""

    @property
    def refused(self) -> bool:
        return self.retry_us > 0


class Step(NamedTuple):
    state: LimitState
    new_tat_us: int


def gcra_step(limit: Limit, tat_us: int | None, now_us: int) -> Step:
    """One request against one limit; the caller stores ``new_tat_us`` only if every limit let it through."""
    interval = limit.interval_us
    tat = max(tat_us if tat_us is not None else now_us, now_us)
    new_tat = tat + interval
    allow_at = new_tat - limit.burst * interval
    if allow_at > now_us:
        return Step(LimitState(limit, 0, tat - now_us, allow_at - now_us), new_tat)
    return Step(LimitState(limit, (now_us - allow_at) // interval, new_tat - now_us, 0), new_tat)


def now_us() -> int:
    return time.time_ns() // 1000


class LocalLimiter:
    """The same limits, counted in this process only: the fallback while Redis is unreachable.

    Each copy of the service then lets through up to the full limit on its own, which is the price of
    accepting votes at all during the outage.
    """

    _MAX_SUBJECTS = 100_000

    def __init__(self) -> None:
        self._tats: dict[tuple[str, str], int] = {}

    def check(self, subjects: Sequence[tuple[Limit, str]], now: int | None = None) -> list[LimitState]:
        """Count the request against every limit, or against none when any refuses it."""
        now = now if now is not None else now_us()
        steps = [gcra_step(limit, self._tats.get((limit.name, subject)), now) for limit, subject in subjects]
        if not any(step.state.refused for step in steps):
            if len(self._tats) >= self._MAX_SUBJECTS:
                self._forget_idle(now)
            for (limit, subject), step in zip(subjects, steps, strict=True):
                self._tats[(limit.name, subject)] = step.new_tat_us
        return [step.state for step in steps]

    def _forget_idle(self, now: int) -> None:
        # A TAT in the past is the same as no entry at all.
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}


def most_restrictive(states: Sequence[LimitState]) -> LimitState | None:
    """The limit to report: the one refusing longest, else the one with least left (then the slowest to refill)."""
    if not states:
        return None
    refused = [state for state in states if state.refused]
    if refused:
        return max(refused, key=lambda state: state.retry_us)
    return min(states, key=lambda state: (state.remaining, -state.reset_us))


def whole_seconds(microseconds: int) -> int:
    return math.ceil(microseconds / 1_000_000)
