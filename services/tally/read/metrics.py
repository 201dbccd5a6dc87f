"""The read API's own metrics: open streams and how fresh its in-memory view is, per worker, added up on a scrape.

Sampled (every ``SAMPLE_S`` and right before this worker answers a scrape) rather than counted on the read path,
which stays untouched. The view's age is the time since it last heard how things stand: a change notice taken
in or a reload from Postgres (one every ``SHIPSKIP_VIEW_RESYNC_S`` at least), so it stays below that while all
is well and grows while the view cannot hear from the projector or Postgres.
"""

import asyncio
import time
from contextlib import suppress

from prometheus_client import Counter, Gauge

from services.tally.read.sse import FiguresBroadcast
from services.tally.read.view import CommunityView

SAMPLE_S = 1.0


class ReadMetrics:
    def __init__(self) -> None:
        # live*: a worker that is gone no longer counts (services/shared/metrics.py).
        self.sse_clients = Gauge(
            "shipskip_sse_clients", "Open /community/stream connections", multiprocess_mode="livesum", registry=None
        )
        self.sse_limit = Gauge(
            "shipskip_sse_clients_limit",
            "Open streams taken before a 503 too_many_streams (SHIPSKIP_SSE_MAX_STREAMS, per worker)",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.view_age = Gauge(
            "shipskip_view_age_seconds",
            "Since the in-memory view last took in a change notice or a reload (the stalest worker)",
            multiprocess_mode="livemax",
            registry=None,
        )
        self.view_position = Gauge(
            "shipskip_view_position",
            "The stream position the in-memory view has taken in (the worker furthest behind)",
            multiprocess_mode="livemin",
            registry=None,
        )
        self.view_reloads = Counter(
            "shipskip_view_reloads", "Times the in-memory view was read again from Postgres", registry=None
        )
        self._view: CommunityView | None = None
        self._broadcast: FiguresBroadcast | None = None
        self._seen: tuple[int, int] = (-1, -1)
        """The view's (reloads, position) at the last sample: a change means it heard news since."""
        self._refreshed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self, view: CommunityView, broadcast: FiguresBroadcast) -> None:
        self._view, self._broadcast = view, broadcast
        self.sample()
        self._task = asyncio.create_task(self._sampler(), name="read-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def sample(self) -> None:
        view, broadcast = self._view, self._broadcast
        if view is None or broadcast is None:
            return
        now = time.monotonic()
        reloads, position = view.reloads, view.position
        if (reloads, position) != self._seen:
            if reloads > self._seen[0] >= 0:
                self.view_reloads.inc(reloads - self._seen[0])
            elif self._seen[0] < 0:
                self.view_reloads.inc(reloads)
            self._seen = (reloads, position)
            self._refreshed_at = now
        self.view_age.set(now - self._refreshed_at)
        self.view_position.set(position)
        self.sse_clients.set(broadcast.clients)
        self.sse_limit.set(broadcast.max_clients)

    async def _sampler(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            self.sample()
