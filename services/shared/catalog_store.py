"""The catalogue in JetStream's key-value bucket CATALOG (key layout and reading rules: catalog_fold.py): reading
it once, and loading a new one.

A load (``plan_load`` then ``apply_load``) reads the live state, takes the lock with a compare-and-set of ``head``
(the revision that write gets is the new generation), writes a version of each entry that changed, commits by
setting ``head`` to the new generation (compare-and-set again: a load that lost its lock cannot commit), then
purges the versions the commit superseded. A one-tool change writes one entry.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from contracts.catalog import Catalog, CatalogError, CatalogHead, Comparison, LoadLock, Tool, decode_head, encode_head
from contracts.subjects import CATALOG_BUCKET
from services.shared.catalog_fold import (
    HEAD_KEY,
    LEGACY_KEY,
    CatalogFold,
    CatalogOutOfStep,
    Entry,
    EntryKey,
    Kind,
    encode_entry,
    version_key,
)
from services.shared.config import NatsSettings
from services.shared.jetstream import catalog_bucket, connect

log = logging.getLogger(__name__)

BACKING_STREAM = "KV_" + CATALOG_BUCKET
"""The stream behind the bucket (NATS's naming), purged by subject to drop superseded versions without a marker."""
LOCK_STALE_S = 120.0
"""A load's lock older than this belongs to a loader that died: the next load takes it over."""
IN_FLIGHT = 256
"""Writes (and purges) a load keeps in flight."""
PAYLOAD_HEADROOM = 1024
"""Bytes of a message's max payload kept for its subject and headers."""
_T = TypeVar("_T")
Progress = Callable[[int, int], None]
"""(entries written, entries to write)."""


# -- reading once (a load, `catalog show`, bootstrap) -----------------------------------------------------------


async def open_bucket(js: JetStreamContext) -> KeyValue | None:
    """The bucket, or None when it was never created (readers leave that to writers, which know the replicas)."""
    try:
        return await js.key_value(CATALOG_BUCKET)
    except BucketNotFoundError:
        return None


def is_removal(entry: KeyValue.Entry) -> bool:
    return entry.operation in ("DEL", "PURGE")


QUIET_S = 5.0
"""After nats-py's marker, how long a watch waits for the stored entries before it takes them as gone."""


class BucketWatch:
    """A KV watch over the whole bucket (``watchall``) that says when it has delivered what was stored.

    nats-py's own marker (``None``) can come before the stored entries (nats-io/nats.py#842 and #995: it compares
    the consumer's pending count with the messages its callback has handled, while the server may have sent them
    all already; and a message's pending count can read 0 and then grow again under concurrent writes). Here the
    boundary is the stream's last sequence, read before the watch starts: what was stored has been delivered once
    an entry at or past it arrives. The bucket's last message is always the head's latest, which no load purges;
    should the boundary's message vanish anyway, the watch takes the stored entries as delivered ``QUIET_S`` after
    nats-py's marker with nothing arriving.
    """

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._watcher: KeyValue.KeyWatcher | None = None
        self._boundary = 0

    async def start(self) -> None:
        status = await self._bucket.status()
        state = status.stream_info.state
        self._boundary = state.last_seq if state.messages else 0
        self._watcher = await self._bucket.watchall()

    async def stop(self) -> None:
        """Ends ``entries`` (from any task)."""
        if self._watcher is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._watcher.stop()  # type: ignore[no-untyped-call]

    async def entries(self) -> AsyncIterator[KeyValue.Entry | None]:
        """Every entry in stream order, with one None right after the last of those stored when it started."""
        assert self._watcher is not None, "start() first"
        synced = marker = False
        while True:
            try:
                item = await self._watcher.updates(None if synced or not marker else QUIET_S)  # type: ignore[no-untyped-call]
            except nats.errors.TimeoutError:
                synced = True
                yield None
                continue
            if item is KeyValue.KeyWatcher.STOP_ITER:
                return
            if item is None:
                marker = True
                if not synced and self._boundary == 0:
                    synced = True
                    yield None
                continue
            assert isinstance(item, KeyValue.Entry)
            yield item
            if not synced and (item.revision or 0) >= self._boundary:
                synced = True
                yield None


async def stored_entries(bucket: KeyValue) -> list[KeyValue.Entry]:
    """Every entry the bucket holds now, removal markers included, in stream order (through ``BucketWatch``: nats-py's
    ``keys()`` can end before the stored entries arrive, nats-io/nats.py#842)."""
    watch = BucketWatch(bucket)
    await watch.start()
    entries: list[KeyValue.Entry] = []
    try:
        async for entry in watch.entries():
            if entry is None:
                return entries
            entries.append(entry)
    finally:
        await watch.stop()
    raise CatalogOutOfStep("the catalogue watch ended before it delivered the stored entries")


async def read_fold(bucket: KeyValue, *, track_versions: bool = False, attempts: int = 3) -> CatalogFold:
    """Everything the bucket holds now, folded; read again when a load committed in the middle of the read and
    purged what this read was about to take."""
    for attempt in range(attempts):
        fold = CatalogFold(track_versions=track_versions)
        try:
            for entry in await stored_entries(bucket):
                fold.take(entry.key, entry.value, entry.revision or 0, is_removal(entry))
            return fold
        except CatalogOutOfStep as exc:
            if attempt == attempts - 1:
                raise
            log.info("catalogue changed while read (%s); reading again", exc)
    raise CatalogOutOfStep(f"the catalogue could not be read in {attempts} attempts")


async def stored_revision(bucket: KeyValue) -> int:
    """The revision the bucket holds, from its head alone (two small reads): 0 when none was ever loaded."""
    try:
        head = decode_head((await bucket.get(HEAD_KEY)).value or b"")
        if head.generation:
            return head.generation
    except KeyNotFoundError:
        pass
    try:
        return (await bucket.get(LEGACY_KEY)).revision or 0
    except KeyNotFoundError:
        return 0


async def read_catalog(js: JetStreamContext) -> tuple[Catalog | None, int]:
    """The committed catalogue and its revision; (None, 0) when none was ever loaded."""
    bucket = await open_bucket(js)
    if bucket is None:
        return None, 0
    fold = await read_fold(bucket)
    if not fold.revision:
        return None, 0
    return fold.catalog(), fold.revision


# -- loading ---------------------------------------------------------------------------------------------------


class CatalogDiff(msgspec.Struct, frozen=True):
    """A new catalogue against the live one, ids in order."""

    tools_added: list[str]
    tools_changed: list[str]
    tools_removed: list[str]
    comparisons_added: list[str]
    comparisons_changed: list[str]
    comparisons_removed: list[str]

    @property
    def empty(self) -> bool:
        return not any(msgspec.structs.astuple(self))


def diff_catalogs(tools: dict[str, Tool], comparisons: dict[str, Comparison], catalog: Catalog) -> CatalogDiff:
    new_tools = {tool.id: tool for tool in catalog.tools}
    new_comparisons = {comparison.id: comparison for comparison in catalog.comparisons}
    return CatalogDiff(
        tools_added=sorted(new_tools.keys() - tools.keys()),
        tools_changed=sorted(k for k, v in new_tools.items() if k in tools and tools[k] != v),
        tools_removed=sorted(tools.keys() - new_tools.keys()),
        comparisons_added=sorted(new_comparisons.keys() - comparisons.keys()),
        comparisons_changed=sorted(k for k, v in new_comparisons.items() if k in comparisons and comparisons[k] != v),
        comparisons_removed=sorted(comparisons.keys() - new_comparisons.keys()),
    )


@dataclass
class LoadPlan:
    """What a load would do, worked out against the live state it read; nothing written yet."""

    catalog: Catalog
    diff: CatalogDiff
    writes: dict[EntryKey, bytes]
    """The version of each entry to write (``null``: removed)."""
    fold: CatalogFold

    @property
    def previous(self) -> int:
        return self.fold.revision


@dataclass
class LoadReport:
    revision: int
    previous: int
    written: int
    purged: int
    """Superseded versions removed after the commit."""
    left: int
    """Superseded versions a purge failed on: harmless, the next load removes them."""
    seconds: float


class CatalogBusy(Exception):
    """Another load holds the lock, or changed the catalogue after this one read it: nothing was committed."""


def _encoded(catalog: Catalog, max_payload: int | None) -> dict[EntryKey, bytes]:
    limit = None if max_payload is None else max_payload - PAYLOAD_HEADROOM
    encoded: dict[EntryKey, bytes] = {}
    lists: tuple[tuple[Kind, Sequence[Entry]], ...] = (
        (Kind.TOOL, catalog.tools),
        (Kind.COMPARISON, catalog.comparisons),
    )
    for kind, entries in lists:
        for index, entry in enumerate(entries):
            data = encode_entry(entry)
            if limit is not None and len(data) > limit:
                raise CatalogError(
                    f"invalid catalogue: {kind} {entry.id!r} takes {len(data):,} bytes, more than the {limit:,} a"
                    f" NATS message can carry here - at `$.{kind}s[{index}]`"
                )
            encoded[(kind, entry.id)] = data
    return encoded


def plan_from(fold: CatalogFold, catalog: Catalog, max_payload: int | None = None) -> LoadPlan:
    encoded = _encoded(catalog, max_payload)
    diff = diff_catalogs(fold.tools, fold.comparisons, catalog)
    writes: dict[EntryKey, bytes] = {}
    if fold.committed:
        for kind, added, changed, removed in (
            (Kind.TOOL, diff.tools_added, diff.tools_changed, diff.tools_removed),
            (Kind.COMPARISON, diff.comparisons_added, diff.comparisons_changed, diff.comparisons_removed),
        ):
            for entry_id in (*added, *changed):
                writes[(kind, entry_id)] = encoded[(kind, entry_id)]
            for entry_id in removed:
                writes[(kind, entry_id)] = encode_entry(None)
    else:
        # Nothing committed yet (an empty bucket, or the old single key): every entry, and a removal for each
        # entry of the old key that is gone, so that readers holding the old key drop it at the commit.
        writes.update(encoded)
        for entry_id in diff.tools_removed:
            writes[(Kind.TOOL, entry_id)] = encode_entry(None)
        for entry_id in diff.comparisons_removed:
            writes[(Kind.COMPARISON, entry_id)] = encode_entry(None)
    return LoadPlan(catalog, diff, writes, fold)


async def plan_load(js: JetStreamContext, catalog: Catalog, max_payload: int | None = None) -> LoadPlan:
    """Read the live catalogue and work out what loading ``catalog`` changes; writes nothing."""
    bucket = await open_bucket(js)
    fold = await read_fold(bucket, track_versions=True) if bucket else CatalogFold(track_versions=True)
    return plan_from(fold, catalog, max_payload)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _died_here(lock: LoadLock) -> bool:
    """The lock's loader ran on this host and its process is gone (a CLI killed mid-load): no need to wait."""
    host, _, pid = lock.by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _lock(bucket: KeyValue, fold: CatalogFold, stale_s: float) -> int:
    """Take the load lock (compare-and-set of the head the plan read); its revision is the new generation."""
    held = fold.head
    if held is not None and held.loading is not None:
        age = time.time() - held.loading.started
        if age < stale_s and not _died_here(held.loading):
            raise CatalogBusy(
                f"another catalogue load ({held.loading.by}, started {age:.0f} s ago) is running;"
                " run this one again once it is done"
            )
        log.warning("taking over the lock of a catalogue load that started %.0f s ago (%s)", age, held.loading.by)
    lock = LoadLock(by=_owner(), started=time.time())
    head = msgspec.structs.replace(held, loading=lock) if held is not None else CatalogHead(0, 0, 0, 0, lock)
    try:
        if fold.head_revision:
            return await bucket.update(HEAD_KEY, encode_head(head), last=fold.head_revision)
        return await bucket.create(HEAD_KEY, encode_head(head))
    except KeyWrongLastSequenceError:
        raise CatalogBusy("the catalogue changed after this load read it (another load?); run it again") from None


async def _release(bucket: KeyValue, fold: CatalogFold, lock_revision: int) -> None:
    """Give the lock back after a failed load (best effort: otherwise it goes stale)."""
    head = fold.head or CatalogHead(0, 0, 0, 0)
    try:
        await bucket.update(HEAD_KEY, encode_head(msgspec.structs.replace(head, loading=None)), last=lock_revision)
    except (nats.errors.Error, OSError) as exc:
        log.warning("could not release the catalogue load lock (%s); it goes stale in %.0f s", exc, LOCK_STALE_S)


async def _each(items: Iterable[_T], work: Callable[[_T], Awaitable[None]], progress: Callable[[], None]) -> None:
    """``work`` on every item, ``IN_FLIGHT`` at a time; the first failure cancels the rest."""
    queue: Iterator[_T] = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)
            progress()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(IN_FLIGHT):
                group.create_task(worker())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None  # callers handle one failure, as from a single write


async def _write(bucket: KeyValue, generation: int, writes: dict[EntryKey, bytes], progress: Progress | None) -> None:
    done = 0

    async def put(item: tuple[EntryKey, bytes]) -> None:
        (kind, entry_id), data = item
        await bucket.put(version_key(kind, entry_id, generation), data)

    def count() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(writes))

    await _each(writes.items(), put, count)


async def _purge(js: JetStreamContext, keys: list[str]) -> int:
    """Remove every message of these keys without leaving a marker (readers never need to hear of them)."""
    done = 0

    async def purge(key: str) -> None:
        await js.purge_stream(BACKING_STREAM, subject=f"$KV.{CATALOG_BUCKET}.{key}")

    def count() -> None:
        nonlocal done
        done += 1

    await _each(keys, purge, count)
    return done


def _abandoned(fold: CatalogFold) -> list[str]:
    """Versions above the committed head: written by a load that died. Purged before the next load commits, or a
    reader starting afresh would take them for committed ones."""
    return [
        version_key(kind, entry_id, generation)
        for (kind, entry_id), generations in fold.versions.items()
        for generation in generations
        if generation > fold.committed
    ]


def _superseded(fold: CatalogFold, written: set[EntryKey]) -> list[str]:
    """After a commit: every older version of what it wrote, versions that an interrupted clean-up left behind,
    removal markers one generation old (every reader has had a whole load's time to take them in), the old key."""
    keys = []
    for entry_key, generations in fold.versions.items():
        kind, entry_id = entry_key
        committed = [g for g in generations if g <= fold.committed]
        if not committed:
            continue
        if entry_key in written:
            drop = committed
        else:
            newest = max(committed)
            drop = [g for g in committed if g < newest]
            if (kind, entry_id, newest) in fold.markers and newest < fold.committed:
                drop.append(newest)
        keys += [version_key(kind, entry_id, generation) for generation in drop]
    if fold.legacy is not None:
        keys.append(LEGACY_KEY)
    return keys


async def apply_load(
    js: JetStreamContext,
    plan: LoadPlan,
    *,
    replicas: int = 1,
    progress: Progress | None = None,
    lock_stale_s: float = LOCK_STALE_S,
) -> LoadReport:
    """Write the plan's entries under a new generation and commit it; raises CatalogBusy when it cannot."""
    started = time.monotonic()
    fold = plan.fold
    if fold.committed and not plan.writes and fold.legacy is None:
        return LoadReport(fold.committed, fold.committed, 0, 0, 0, time.monotonic() - started)
    bucket = await catalog_bucket(js, replicas)
    lock_revision = await _lock(bucket, fold, lock_stale_s)
    generation = lock_revision
    committed = False
    try:
        await _purge(js, _abandoned(fold))
        await _write(bucket, generation, plan.writes, progress)
        head = CatalogHead(generation, len(plan.catalog.tools), len(plan.catalog.comparisons), len(plan.writes))
        try:
            await bucket.update(HEAD_KEY, encode_head(head), last=lock_revision)
        except KeyWrongLastSequenceError:
            raise CatalogBusy(
                f"another load took this one's lock over (held more than {lock_stale_s:.0f} s); nothing committed"
            ) from None
        committed = True
    finally:
        if not committed:
            await _release(bucket, fold, lock_revision)
    superseded = _superseded(fold, set(plan.writes))
    try:
        purged = await _purge(js, superseded)
    except (nats.errors.Error, OSError) as exc:
        log.warning("catalogue clean-up left superseded entries (%s); the next load removes them", exc)
        purged = 0
    return LoadReport(
        generation, fold.revision, len(plan.writes), purged, len(superseded) - purged, time.monotonic() - started
    )


async def write_catalog(
    js: JetStreamContext, catalog: Catalog, replicas: int = 1, max_payload: int | None = None
) -> LoadReport:
    """Make ``catalog`` the current one (no checks beyond its own: see services/operators/catalog_loads.py)."""
    return await apply_load(js, await plan_load(js, catalog, max_payload), replicas=replicas)


async def migrate_legacy(js: JetStreamContext, replicas: int = 1) -> str:
    """Convert the single-key catalogue of earlier releases to entries (``shipskip migrate``, bootstrap)."""
    bucket = await open_bucket(js)
    if bucket is None:
        return "catalogue: none loaded yet"
    try:
        await bucket.get(LEGACY_KEY)
    except KeyNotFoundError:
        revision = await stored_revision(bucket)
        return f"catalogue: revision {revision}, one entry per tool and comparison" if revision else "catalogue: none"
    fold = await read_fold(bucket, track_versions=True)
    if fold.legacy is None:
        return f"catalogue: revision {fold.revision}, one entry per tool and comparison"
    if fold.committed and fold.legacy_revision < fold.head_revision:
        await _purge(js, [LEGACY_KEY])
        return f"catalogue: revision {fold.revision}; removed the single-key copy it superseded"
    report = await apply_load(js, plan_from(fold, fold.legacy), replicas=replicas)
    return (
        f"catalogue: converted the single-key catalogue ({len(fold.legacy.tools)} tools,"
        f" {len(fold.legacy.comparisons)} comparisons) to one entry each, revision {report.revision}"
    )


async def migrate_catalog_storage(nats: NatsSettings, replicas: int = 1) -> str:
    """``shipskip migrate``'s catalogue step, on a connection of its own."""
    nc = await connect(nats, "shipskip-migrate", timeout_s=30)
    try:
        return await migrate_legacy(nc.jetstream(), replicas)
    finally:
        await nc.close()
