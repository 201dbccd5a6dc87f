"""The read API's in-memory view of every comparison's community figures, kept ready to send.

Loaded from Postgres at start; then the projector's change notices (contracts/notices.py) are applied as they
arrive, with no Postgres read: each carries the comparison's new counts. The view reloads everything in one
consistent read when notices were missed (a notice's ``previous`` is not the last position seen), after a NATS
reconnect, when a rebuild announces ``tally.reload``, and every ``resync_s`` as a safety net for a lost notice
that no later one would reveal. Each render keeps the JSON bytes, the HTTP answers and the SSE event, so a read
does no work, and listeners (the SSE fan-out) hear which comparisons changed.

Renders are made when a comparison's counts change or when it is first asked for, never for the whole catalogue:
the work and the memory grow with the comparisons that have traffic, not with those that sit in the catalogue
unvoted and unread. A catalogue change re-renders only the comparisons it touched that are held.
"""

import asyncio
import logging
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass

import asyncpg
import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts.http import ComparisonCommunity
from contracts.notices import decode_notice
from contracts.subjects import TALLY_NOTICE_PREFIX, TALLY_RELOAD_SUBJECT
from services.shared.catalog_view import CatalogChange, CatalogView
from services.tally.changes import comparison_positions, partition_change_positions
from services.tally.read.figures import comparison_figures
from services.tally.read.http_cache import CachedJson
from services.tally.read.sse_frames import event_frame
from services.tally.read.standings import (
    NO_BALLOTS,
    NoticeChain,
    Standing,
    merge_snapshot,
    newer_than,
    standing_of,
)
from services.tally.store import read_tallies

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()

ChangeListener = Callable[[set[str]], None]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One comparison's figures in every form the read API sends them."""

    position: int
    figures: ComparisonCommunity
    body: bytes
    http: CachedJson
    event: bytes
    """The SSE event: the position as its id, the JSON body as its data."""


class CommunityView:
    def __init__(self, pool: asyncpg.Pool, catalog: CatalogView, min_ballots: int, resync_s: float = 30.0) -> None:
        self._pool = pool
        self._catalog = catalog
        self._min_ballots = min_ballots
        self._resync_s = resync_s
        self._standings: dict[str, Standing] = {}
        self.rendered: dict[str, Rendered] = {}
        self.chain = NoticeChain()
        self.reloads = 0
        """Reads of Postgres since start (notices alone never read it)."""
        self._listeners: list[ChangeListener] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription] = []
        catalog.on_change(self._on_catalog)

    @property
    def position(self) -> int:
        """The last batch position this view has taken in."""
        return self.chain.position

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def start(self, nc: NATS) -> None:
        # Subscribe before the first load: a batch committed in between is then either in the load or announced.
        self._subscriptions = [
            await nc.subscribe(TALLY_NOTICE_PREFIX + "*", cb=self._on_notice),
            await nc.subscribe(TALLY_RELOAD_SUBJECT, cb=self._on_reload_notice),
        ]
        await nc.flush()
        await self.reload()
        self._task = asyncio.create_task(self._refresher(), name="community-refresh")

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            with suppress(nats.errors.Error):  # a closed connection has no subscriptions left anyway
                await subscription.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def request_reload(self, reason: str) -> None:
        log.info("reloading the view from Postgres: %s", reason)
        self._wake.set()

    async def reload(self) -> None:
        """Read every comparison's counts and position in one snapshot and take in what is new."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            positions = await comparison_positions(conn)
            chains = await partition_change_positions(conn)
            tallies = await read_tallies(conn)
        counts: dict[str, dict[str, tuple[int, int]]] = {comparison_id: {} for comparison_id in positions}
        for (comparison_id, tool_id), row in tallies.items():
            counts.setdefault(comparison_id, {})[tool_id] = (row.ship, row.skip)
        snapshot = {c: Standing(positions.get(c, 0), tools) for c, tools in counts.items()}
        changed = merge_snapshot(self._standings, snapshot)
        self._standings.update(changed)
        self.chain.reloaded(chains)
        self.reloads += 1
        self._render(changed)

    def get(self, comparison_id: str) -> Rendered | None:
        """A comparison's figures, rendered now if nothing rendered them yet; None when it is not in the catalogue."""
        held = self.rendered.get(comparison_id)
        if held is None and self._catalog.comparison(comparison_id) is not None:
            self._render([comparison_id], notify=False)
            held = self.rendered.get(comparison_id)
        return held

    def _on_catalog(self, change: CatalogChange) -> None:
        """Re-render what the change touched among the renders held (the rest renders when asked for)."""
        touched = [comparison_id for comparison_id in change.comparisons if comparison_id in self.rendered]
        gone = [comparison_id for comparison_id in touched if self._catalog.comparison(comparison_id) is None]
        for comparison_id in gone:
            del self.rendered[comparison_id]
        self._render(touched, also_changed=gone)

    async def _on_notice(self, msg: Msg) -> None:
        try:
            notice = decode_notice(msg.data)
        except msgspec.DecodeError as exc:
            self.request_reload(f"unreadable notice on {msg.subject} ({exc})")
            return
        if self.chain.observe(notice.position, notice.previous, notice.partition):
            self.request_reload(f"missed notices of {notice.partition} between {notice.previous} and {notice.position}")
        standing = standing_of(notice)
        if newer_than(standing, self._standings.get(notice.comparison_id)):
            self._standings[notice.comparison_id] = standing
            self._render([notice.comparison_id])

    async def _on_reload_notice(self, msg: Msg) -> None:
        self.request_reload(f"{msg.subject} {msg.data[:40]!r}")

    def _render(self, comparison_ids: Iterable[str], also_changed: Iterable[str] = (), notify: bool = True) -> None:
        changed = set(also_changed)
        for comparison_id in comparison_ids:
            found = self._catalog.comparison(comparison_id)
            if found is None:
                continue  # counted, but not (or no longer) in the catalogue
            standing = self._standings.get(comparison_id, NO_BALLOTS)
            figures = comparison_figures(*found, standing.counts, standing.position, self._min_ballots)
            body = _encoder.encode(figures)
            held = self.rendered.get(comparison_id)
            if held is not None and held.body == body:
                continue
            self.rendered[comparison_id] = Rendered(
                standing.position,
                figures,
                body,
                CachedJson(body, standing.position),
                event_frame(standing.position, body),
            )
            changed.add(comparison_id)
        if changed and notify:
            for listener in self._listeners:
                listener(changed)

    async def _refresher(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._resync_s if self._resync_s > 0 else None):
                    await self._wake.wait()
            except TimeoutError:
                pass  # the periodic resync
            self._wake.clear()
            try:
                await self.reload()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
                # Keep answering from memory; try again shortly, on fresh connections (the old may be half-closed).
                log.warning("view reload failed (%s); keeping the last figures", exc)
                await self._pool.expire_connections()
                await asyncio.sleep(1.0)
                self._wake.set()
