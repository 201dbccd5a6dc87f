"""The read API's in-memory view of every comparison's figures, with their JSON bytes encoded once.

Loaded from Postgres at start; then each change notice from the projector (``tally.v1.<comparison>``) marks its
comparison stale, and a single task re-reads the stale ones in one query, so a burst of notices costs one read.
A reconnect to NATS (notices may have been missed) reloads everything.
"""

import asyncio
import logging
from collections.abc import Iterable

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts.catalog import Catalog
from contracts.http import ComparisonCommunity
from contracts.subjects import TALLY_NOTICE_PREFIX
from services.shared.catalog_view import CatalogView
from services.tally.figures import comparison_figures
from services.tally.store import read_position, read_tallies

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


class CommunityView:
    def __init__(self, pool: asyncpg.Pool, catalog: CatalogView, min_ballots: int) -> None:
        self._pool = pool
        self._catalog = catalog
        self._min_ballots = min_ballots
        self._counts: dict[str, dict[str, tuple[int, int]]] = {}
        self.position = 0
        self.figures: dict[str, ComparisonCommunity] = {}
        self.encoded: dict[str, bytes] = {}
        self._stale: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None
        catalog.on_change(self._on_catalog)

    async def start(self, nc: NATS) -> None:
        await self.reload()
        self._subscription = await nc.subscribe(TALLY_NOTICE_PREFIX + "*", cb=self._on_notice)
        self._task = asyncio.create_task(self._refresher(), name="community-refresh")

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mark_all_stale(self) -> None:
        """After a NATS reconnect, notices may have been missed: re-read everything."""
        self._stale.add("*")
        self._wake.set()

    async def reload(self, comparison_ids: Iterable[str] | None = None) -> None:
        ids = None if comparison_ids is None else sorted(comparison_ids)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            position = await read_position(conn)
            tallies = await read_tallies(conn, ids)
        fresh: dict[str, dict[str, tuple[int, int]]] = {}
        for (comparison_id, tool_id), counts in tallies.items():
            fresh.setdefault(comparison_id, {})[tool_id] = (counts.ship, counts.skip)
        if ids is None:
            self._counts = fresh
        else:
            for comparison_id in ids:
                self._counts[comparison_id] = fresh.get(comparison_id, {})
        self.position = max(self.position, position) if ids is not None else position
        self._render(ids)

    def _render(self, comparison_ids: Iterable[str] | None = None) -> None:
        catalog = self._catalog
        ids = [c.id for c in catalog.catalog.comparisons] if comparison_ids is None else comparison_ids
        for comparison_id in ids:
            found = catalog.comparison(comparison_id)
            if found is None:
                self.figures.pop(comparison_id, None)
                self.encoded.pop(comparison_id, None)
                continue
            comparison, tools = found
            figures = comparison_figures(
                comparison, tools, self._counts.get(comparison_id, {}), self.position, self._min_ballots
            )
            self.figures[comparison_id] = figures
            self.encoded[comparison_id] = _encoder.encode(figures)

    def _on_catalog(self, _: Catalog) -> None:
        self.figures.clear()
        self.encoded.clear()
        self._render()

    async def _on_notice(self, msg: Msg) -> None:
        self._stale.add(msg.subject.removeprefix(TALLY_NOTICE_PREFIX))
        self._wake.set()

    async def _refresher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            stale, self._stale = self._stale, set()
            try:
                await self.reload(None if "*" in stale else stale)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                # Keep answering from memory; try again shortly.
                log.warning("view refresh failed (%s); keeping the last figures", exc)
                self._stale |= stale
                await asyncio.sleep(1.0)
                self._wake.set()
