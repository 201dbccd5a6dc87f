"""The current catalogue in memory, followed live from the CATALOG bucket (services/shared/catalog_store.py).

One KV watch over the bucket delivers what is stored, then every change as it is written; a load's entries are
taken in when the head commits their generation, all at once, and listeners hear which tools and comparisons
changed (a one-tool change re-renders that tool's comparisons, nothing else). Start-up waits until the watch has
delivered everything stored.

A watch can die quietly: nats-py's (an ordered push consumer, 2.16) did not resume after a NATS restart in
tests/faults/test_catalog_watch.py. So the head is read every ``check_s`` (one small request): when it names a
generation the view has not taken in by the next check, the view watches again from scratch and takes in the
difference. A change made after a NATS restart thus arrives within two checks at worst. Any failure keeps the last
catalogue served.

The indexes a read API pages with (every comparison, each tool's and each category's, sorted by id) are kept
here too, so a page is a bisection and a slice whatever the catalogue's size.
"""

import asyncio
import bisect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from contracts.catalog import Comparison, Tool
from services.shared.catalog_fold import CatalogFold, Committed
from services.shared.catalog_store import BucketWatch, is_removal, open_bucket, stored_revision

log = logging.getLogger(__name__)

Resolved = tuple[Comparison, tuple[Tool, Tool]]
SYNC_TIMEOUT_S = 120.0
"""A watch that has not delivered what is stored after this long is made again."""
REBUILD_ABOVE = 2_000
"""Changes in one commit beyond which the indexes are rebuilt rather than updated one by one."""


@dataclass(frozen=True)
class CatalogChange:
    revision: int
    tools: frozenset[str]
    """Tools added, changed or removed."""
    comparisons: frozenset[str]
    """Comparisons added, changed or removed, and those whose tools changed."""


class SortedIds:
    """Ids in order, with insertion and removal by bisection (a few microseconds at 50,000 ids)."""

    __slots__ = ("ids",)

    def __init__(self, ids: list[str] | None = None) -> None:
        self.ids: list[str] = ids if ids is not None else []

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item: str) -> bool:
        at = bisect.bisect_left(self.ids, item)
        return at < len(self.ids) and self.ids[at] == item

    def add(self, item: str) -> None:
        at = bisect.bisect_left(self.ids, item)
        if at == len(self.ids) or self.ids[at] != item:
            self.ids.insert(at, item)

    def discard(self, item: str) -> None:
        at = bisect.bisect_left(self.ids, item)
        if at < len(self.ids) and self.ids[at] == item:
            del self.ids[at]

    def after(self, key: str | None) -> Iterator[str]:
        """The ids after ``key`` (all when None), in order."""
        start = 0 if key is None else bisect.bisect_right(self.ids, key)
        return iter(self.ids[start:]) if start else iter(self.ids)

    def slice_after(self, key: str | None, count: int) -> list[str]:
        start = 0 if key is None else bisect.bisect_right(self.ids, key)
        return self.ids[start : start + count]


def categories_of(resolved: Resolved) -> set[str]:
    """A comparison is in the categories of its two tools."""
    return {tool.category for tool in resolved[1] if tool.category}


class CatalogView:
    def __init__(self, js: JetStreamContext, check_s: float = 2.0, start_timeout_s: float = 60.0) -> None:
        self._js = js
        self._check_s = check_s
        self._start_timeout_s = start_timeout_s
        self._fold = CatalogFold()
        self._resolved: dict[str, Resolved] = {}
        self._ids = SortedIds()
        self._by_tool: dict[str, SortedIds] = {}
        self._by_category: dict[str, SortedIds] = {}
        self._listeners: list[Callable[[CatalogChange], None]] = []
        self._synced = asyncio.Event()
        self._watch: BucketWatch | None = None
        self._watch_started = 0.0
        self._watch_synced = False
        """Whether the current watch has delivered what was stored when it began (the check waits until it has)."""
        self._bucket: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.revision = 0
        self.syncs = 0
        """Times the view read everything (its start, then re-watches)."""

    # -- what services ask -------------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[CatalogChange], None]) -> None:
        self._listeners.append(listener)

    def comparison(self, comparison_id: str) -> Resolved | None:
        """An open comparison with its two tools, or None: one dictionary lookup."""
        return self._resolved.get(comparison_id)

    def tool(self, tool_id: str) -> Tool | None:
        return self._fold.tools.get(tool_id)

    @property
    def comparison_count(self) -> int:
        return len(self._resolved)

    @property
    def tool_count(self) -> int:
        return len(self._fold.tools)

    def comparisons_of(self, tool_id: str) -> int:
        found = self._by_tool.get(tool_id)
        return len(found) if found is not None else 0

    def page(
        self, after: str | None, limit: int, tool_id: str | None = None, category: str | None = None
    ) -> tuple[list[Resolved], bool]:
        """Up to ``limit`` comparisons with ids after ``after``, in id order, and whether more follow."""
        if tool_id is not None:
            ids = self._by_tool.get(tool_id, SortedIds())
        elif category is not None:
            ids = self._by_category.get(category, SortedIds())
        else:
            ids = self._ids
        if tool_id is not None and category is not None:
            # A tool's comparisons are few next to a category's: walk them and keep the category's.
            chosen = [
                self._resolved[cid] for cid in ids.after(after) if category in categories_of(self._resolved[cid])
            ][: limit + 1]
        else:
            chosen = [self._resolved[cid] for cid in ids.slice_after(after, limit + 1)]
        return chosen[:limit], len(chosen) > limit

    # -- life cycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the bucket; returns once everything stored has been taken in."""
        self._tasks = [
            asyncio.create_task(self._follow_forever(), name="catalog-watch"),
            asyncio.create_task(self._check_forever(), name="catalog-check"),
        ]
        try:
            await asyncio.wait_for(self._synced.wait(), self._start_timeout_s)
        except TimeoutError:
            await self.stop()
            raise ConnectionError(f"could not read the catalogue within {self._start_timeout_s:.0f} s") from None

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def rewatch(self) -> None:
        """Read everything again from a new watch (the current one ends)."""
        if self._watch is not None:
            await self._watch.stop()

    async def _follow_forever(self) -> None:
        while True:
            try:
                await self._follow()
            except Exception as exc:  # any failure: keep serving the last catalogue, and watch again
                log.warning("catalogue watch failed (%s); watching again", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        bucket = await open_bucket(self._js)
        if bucket is None:
            self._synced.set()  # nothing loaded yet: an empty catalogue until a load creates the bucket
            await asyncio.sleep(self._check_s)
            return
        fold = CatalogFold()
        watch = self._watch = BucketWatch(bucket)
        await watch.start()
        synced = self._watch_synced = False
        self._watch_started = asyncio.get_running_loop().time()
        try:
            async for entry in watch.entries():
                if entry is None:  # everything stored when the watch began has been delivered
                    self._adopt(fold)
                    synced = self._watch_synced = True
                    continue
                committed = fold.take(entry.key, entry.value, entry.revision or 0, is_removal(entry))
                if synced and committed is not None:
                    self._apply(committed)
        finally:
            self._watch = None
            await watch.stop()

    async def _check_forever(self) -> None:
        behind_since: int | None = None
        while True:
            await asyncio.sleep(self._check_s)
            if not self._watch_synced:
                # A watch still delivering what is stored (a large catalogue, a busy machine) is not behind, unless
                # it has stalled for longer than any delivery takes.
                if asyncio.get_running_loop().time() - self._watch_started > SYNC_TIMEOUT_S:
                    log.warning("catalogue watch stalled before delivering what is stored; watching again")
                    await self.rewatch()
                continue
            try:
                stored = await self._stored_revision()
            except Exception as exc:  # NATS away: the watch recovers by itself or is re-made when it is back
                log.debug("catalogue check failed: %s", exc)
                continue
            if stored is None or stored == self.revision:
                behind_since = None
            elif behind_since != stored:
                behind_since = stored  # give the watch one more period to deliver it
            else:
                log.warning("catalogue watch did not deliver revision %d (holding %d); watching again", stored,
                            self.revision)  # fmt: skip
                behind_since = None
                await self.rewatch()

    async def _stored_revision(self) -> int | None:
        """The revision the bucket holds now (None: no bucket to compare with)."""
        bucket = self._bucket = self._bucket or await open_bucket(self._js)
        return None if bucket is None else (await stored_revision(bucket)) or None

    # -- taking changes in -------------------------------------------------------------------------------------

    def _adopt(self, fold: CatalogFold) -> None:
        """A (re)read is complete: the view switches to it, and listeners hear what differs from before."""
        before = self._fold
        tools = {k for k in before.tools.keys() | fold.tools.keys() if before.tools.get(k) != fold.tools.get(k)}
        comparisons = {
            k
            for k in before.comparisons.keys() | fold.comparisons.keys()
            if before.comparisons.get(k) != fold.comparisons.get(k)
        }
        self._fold = fold
        self.syncs += 1
        log.info("catalogue revision %d: %d tools, %d comparisons", fold.revision, len(fold.tools),
                 len(fold.comparisons))  # fmt: skip
        self._rebuild()
        self._synced.set()
        self._announce(fold.revision, tools, comparisons)

    def _apply(self, committed: Committed) -> None:
        """One commit while following: the indexes move by what it changed."""
        if len(committed.tools) + len(committed.comparisons) > REBUILD_ABOVE:
            self._rebuild()
            affected = set(committed.comparisons)
            for tool_id in committed.tools:
                affected.update(self._by_tool.get(tool_id, SortedIds()).ids)
        else:
            affected = self._update(committed)
        log.info("catalogue revision %d: %d tools and %d comparisons changed", committed.revision,
                 len(committed.tools), len(committed.comparisons))  # fmt: skip
        self._announce(committed.revision, set(committed.tools), affected)

    def _announce(self, revision: int, tools: set[str], comparisons: set[str]) -> None:
        self.revision = revision
        change = CatalogChange(revision, frozenset(tools), frozenset(comparisons))
        for listener in self._listeners:
            listener(change)

    def _resolve(self, comparison: Comparison) -> Resolved | None:
        left, right = (self._fold.tools.get(tool_id) for tool_id in comparison.tools)
        if left is None or right is None:  # never in a checked load; left out rather than half-shown
            log.warning("comparison %s names a tool the catalogue lacks; left out", comparison.id)
            return None
        return comparison, (left, right)

    def _rebuild(self) -> None:
        resolved = {}
        for comparison in self._fold.comparisons.values():
            found = self._resolve(comparison)
            if found is not None:
                resolved[comparison.id] = found
        ids = sorted(resolved)
        by_tool: dict[str, SortedIds] = {}
        by_category: dict[str, SortedIds] = {}
        for comparison_id in ids:  # in order: every list below is built sorted
            found = resolved[comparison_id]
            for tool in found[1]:
                by_tool.setdefault(tool.id, SortedIds()).ids.append(comparison_id)
            for category in categories_of(found):
                by_category.setdefault(category, SortedIds()).ids.append(comparison_id)
        self._resolved, self._ids, self._by_tool, self._by_category = resolved, SortedIds(ids), by_tool, by_category

    def _unindex(self, comparison_id: str) -> None:
        found = self._resolved.pop(comparison_id, None)
        if found is None:
            return
        self._ids.discard(comparison_id)
        for index, keys in ((self._by_tool, [tool.id for tool in found[1]]), (self._by_category, categories_of(found))):
            for key in keys:
                ids = index.get(key)
                if ids is not None:
                    ids.discard(comparison_id)
                    if not ids:
                        del index[key]

    def _index(self, comparison: Comparison) -> None:
        found = self._resolve(comparison)
        if found is None:
            return
        self._resolved[comparison.id] = found
        self._ids.add(comparison.id)
        for tool in found[1]:
            self._by_tool.setdefault(tool.id, SortedIds()).add(comparison.id)
        for category in categories_of(found):
            self._by_category.setdefault(category, SortedIds()).add(comparison.id)

    def _update(self, committed: Committed) -> set[str]:
        affected = set(committed.comparisons)
        for tool_id in committed.tools:
            affected.update(self._by_tool.get(tool_id, SortedIds()).ids)
        for comparison_id in affected:
            self._unindex(comparison_id)
        for comparison_id in affected:
            comparison = self._fold.comparisons.get(comparison_id)
            if comparison is not None:
                self._index(comparison)
        return affected
