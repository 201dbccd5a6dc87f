"""The catalogue store against the suite's real NATS, in-process: a reader never sees half a load, a load that
fails or dies leaves nothing a reader takes in, the lock, and the clean-up of superseded entries."""

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from bench.synthetic_catalog import synthetic_catalog
from contracts.catalog import Catalog, CatalogHead, LoadLock, encode_head
from contracts.subjects import CATALOG_BUCKET
from infra.stack.servers import ServerAddresses
from services.shared.catalog_fold import HEAD_KEY, parse_version_key
from services.shared.catalog_store import (
    CatalogBusy,
    apply_load,
    is_removal,
    open_bucket,
    plan_load,
    read_catalog,
    stored_entries,
    write_catalog,
)
from services.shared.catalog_view import CatalogView

FIRST = synthetic_catalog(300, 2_000, seed=1)
SECOND = synthetic_catalog(300, 2_500, seed=2)  # every tool's text differs: every entry is written again


@pytest_asyncio.fixture
async def nc(servers: ServerAddresses) -> AsyncIterator[NATS]:
    client = await nats.connect(servers.nats_url)
    with contextlib.suppress(NotFoundError):
        await client.jetstream().delete_stream("KV_" + CATALOG_BUCKET)
    yield client
    await client.close()


def ids(catalog: Catalog) -> frozenset[str]:
    return frozenset(c.id for c in catalog.comparisons)


async def version_keys(nc: NATS) -> list[str]:
    """The version keys the bucket holds, a failed load's leftovers included (``read_fold`` would hide them)."""
    bucket = await open_bucket(nc.jetstream())
    assert bucket is not None
    return [
        entry.key
        for entry in await stored_entries(bucket)
        if not is_removal(entry) and parse_version_key(entry.key) is not None
    ]


@pytest.mark.asyncio
async def test_a_reader_sees_the_old_catalogue_or_the_new_never_a_mix(nc: NATS) -> None:
    js = nc.jetstream()
    await write_catalog(js, FIRST)
    view = CatalogView(js)
    await view.start()
    seen: set[frozenset[str]] = set()
    load = asyncio.create_task(write_catalog(js, SECOND))
    try:
        while not load.done() or view.comparison_count != len(SECOND.comparisons):
            page, _ = view.page(None, 5_000)
            snapshot = frozenset(c.id for c, _ in page)
            tools = {t.id: t for t in (FIRST if snapshot == ids(FIRST) else SECOND).tools}
            assert all(tool == tools[tool.id] for _, pair in page for tool in pair), "old and new tools mixed"
            seen.add(snapshot)
            await asyncio.sleep(0)
        await load
    finally:
        await view.stop()
    assert seen == {ids(FIRST), ids(SECOND)}


@pytest.mark.asyncio
async def test_a_failed_load_leaves_nothing_visible_and_the_next_cleans_up(nc: NATS) -> None:
    js = nc.jetstream()
    first = await write_catalog(js, FIRST)
    view = CatalogView(js)
    await view.start()
    try:

        def crash(done: int, total: int) -> None:
            if done == 1_000:
                raise RuntimeError("the loader died")

        with pytest.raises(RuntimeError, match="the loader died"):
            await apply_load(js, await plan_load(js, SECOND), progress=crash)
        await asyncio.sleep(0.5)
        assert view.revision == first.revision
        assert {c.id for c, _ in view.page(None, 5_000)[0]} == ids(FIRST)
        fresh, revision = await read_catalog(js)
        assert fresh is not None
        assert ids(fresh) == ids(FIRST)
        assert revision == first.revision

        second = await write_catalog(js, SECOND)
        async with asyncio.timeout(10):
            while view.revision != second.revision:
                await asyncio.sleep(0.05)
        assert {c.id for c, _ in view.page(None, 5_000)[0]} == ids(SECOND)
        assert view.tool(SECOND.tools[3].id) == SECOND.tools[3]
    finally:
        await view.stop()
    # One version per entry is left: the first load's are superseded, the failed one's purged before the commit.
    keys = await version_keys(nc)
    assert len(keys) == len(SECOND.tools) + len(SECOND.comparisons)
    assert {parse_version_key(key)[2] for key in keys} == {second.revision}  # type: ignore[index]


@pytest.mark.asyncio
async def test_a_load_waits_for_a_live_lock_and_takes_over_a_stale_one(nc: NATS) -> None:
    js = nc.jetstream()
    await write_catalog(js, FIRST)
    bucket = await open_bucket(js)
    assert bucket is not None
    entry = await bucket.get(HEAD_KEY)
    head = msgspec.json.decode(entry.value or b"", type=CatalogHead)
    locked = msgspec.structs.replace(head, loading=LoadLock(by="elsewhere:1", started=time.time()))
    revision = await bucket.update(HEAD_KEY, encode_head(locked), last=entry.revision)
    with pytest.raises(CatalogBusy, match=r"another catalogue load \(elsewhere:1, started \d+ s ago\) is running"):
        await write_catalog(js, SECOND)
    stale = msgspec.structs.replace(head, loading=LoadLock(by="elsewhere:1", started=time.time() - 300))
    await bucket.update(HEAD_KEY, encode_head(stale), last=revision)
    report = await write_catalog(js, SECOND)
    current, at = await read_catalog(js)
    assert current is not None
    assert ids(current) == ids(SECOND)
    assert at == report.revision

    # A loader of this host whose process is gone (a CLI killed mid-load) is not waited for.
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await gone.wait()
    entry = await bucket.get(HEAD_KEY)
    dead = LoadLock(by=f"{socket.gethostname()}:{gone.pid}", started=time.time())
    await bucket.update(HEAD_KEY, encode_head(msgspec.structs.replace(report_head(entry.value), loading=dead)),
                        last=entry.revision)  # fmt: skip
    report = await write_catalog(js, FIRST)
    current, at = await read_catalog(js)
    assert current is not None
    assert ids(current) == ids(FIRST)
    assert at == report.revision


def report_head(value: bytes | None) -> CatalogHead:
    return msgspec.json.decode(value or b"", type=CatalogHead)


@pytest.mark.asyncio
async def test_a_one_tool_change_writes_one_entry_and_leaves_one_version_per_entry(nc: NATS) -> None:
    js = nc.jetstream()
    await write_catalog(js, FIRST)
    tools = list(FIRST.tools)
    tools[0] = msgspec.structs.replace(tools[0], entry="$9/mo")
    changed = Catalog(tools=tools, comparisons=FIRST.comparisons[1:])
    report = await write_catalog(js, changed)
    assert report.written == 2  # the tool, and the removal of the comparison
    assert report.purged == 2
    # One version per entry, and the removal, which stays while it is the last or the one before (a reader more
    # than a whole load behind still takes it in), then goes.
    entries = len(changed.tools) + len(changed.comparisons)
    assert len(await version_keys(nc)) == entries + 1
    assert (await write_catalog(js, changed)).written == 0
    for index, price in ((1, "$1/mo"), (2, "$2/mo")):
        tools[index] = msgspec.structs.replace(tools[index], entry=price)
        await write_catalog(js, Catalog(tools=tools, comparisons=changed.comparisons))
    assert len(await version_keys(nc)) == entries
