"""Failed admin logins per client address: past ``limit`` in a window, the address is refused (429) until the
window ends, whatever token it sends, so a token cannot be guessed at the speed of the network.

Counted in this process alone: the read API (which serves /admin) connects to no Redis. With granian's
``--workers N`` each worker counts its own, so an address gets at most N times the limit before every worker
refuses it (docs/operations.md). A successful login does not clear the count: a guesser who also holds the token
has nothing to guess.
"""

import math
import time
from collections.abc import Callable

MAX_ADDRESSES = 10_000
"""Addresses remembered at most; past it, those whose window is over are forgotten, then the oldest."""


class FailedLogins:
    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # address -> (window start, failures in it)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        found = self._windows.get(address)
        if found is None:
            return None
        started, failures = found
        left = started + self.window_s - self._clock()
        if left <= 0:
            del self._windows[address]
            return None
        return math.ceil(left) if failures >= self.limit else None

    def failed(self, address: str) -> None:
        now = self._clock()
        started, failures = self._windows.get(address, (now, 0))
        if started + self.window_s <= now:
            started, failures = now, 0
        self._windows[address] = (started, failures + 1)
        if len(self._windows) > MAX_ADDRESSES:
            self._forget(now)

    def _forget(self, now: float) -> None:
        windows = {a: w for a, w in self._windows.items() if w[0] + self.window_s > now}
        if len(windows) > MAX_ADDRESSES // 2:
            windows = dict(list(windows.items())[-(MAX_ADDRESSES // 2) :])  # insertion order: the newest kept
        self._windows = windows
