"""Where a rebuild's time goes, one stage at a time (not part of ``make bench``).

    .venv/bin/python -m bench.rebuild_parts [EVENTS]

Starts embedded servers in a temporary folder, appends EVENTS synthetic votes (default 1,000,000, shaped as the
rebuild benchmark's replay stream), then times each stage of a replay on its own, in one process:

- ``read``: nats-py's ordered push consumer, counting messages only (the rebuild benchmark's baseline);
- ``read+metadata``: the same, keeping (stream sequence, subject, data) through ``msg.metadata``;
- ``read+reply``: the same, the stream sequence cut from the reply subject instead (no metadata object);
- ``decode``: ``decode_records`` over the kept records (msgspec, the event contracts);
- ``fold``: the pure fold over all of them in memory, 5,000 events a call, as verify folds;
- ``replay own`` and ``replay nats-py``: the replay (services/tally/rebuild/replay.py) through its own connection and
  through nats-py's ordered consumer, handing batches to a fold that does nothing;
- ``rebuild own`` and ``rebuild nats-py``: the rebuild itself (services/tally/rebuild/rebuild.py), in this process,
  all of the above and the writes, with the replay reading each way, alternately, twice.
"""

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import nats
from nats.aio.msg import Msg

from bench import natsraw
from contracts.catalog import decode_catalog
from contracts.subjects import VOTES_ALL, VOTES_STREAM
from infra.stack.bootstrap import DEMO_CATALOG, bootstrap
from infra.stack.servers import EmbeddedServers
from services.tally.fold import FoldState, fold
from services.tally.rebuild.rebuild import rebuild
from services.tally.rebuild.replay import StreamReplay
from services.tally.rebuild.replay_wire import delivery_sequences
from services.tally.store import StreamRecord, decode_records

_BATCH = 5000
_NO_QUOTA = 2_000_000_000
"""As the benchmark stack's SHIPSKIP_BALLOTS_PER_CLIENT_DAY: every synthetic vote comes from a few clients."""


def _from_metadata(msg: Msg) -> StreamRecord:
    return StreamRecord(msg.metadata.sequence.stream, msg.subject, msg.data)


def _from_reply(msg: Msg) -> StreamRecord:
    return StreamRecord(delivery_sequences(msg.reply)[0], msg.subject, msg.data)


async def read_stream(nats_url: str, expected: int, keep: Callable[[Msg], StreamRecord] | None) -> list[StreamRecord]:
    """Read ``expected`` messages from the start of VOTES with an ordered consumer, keeping what ``keep`` makes."""
    records: list[StreamRecord] = []
    each = None if keep is None else (lambda msg: records.append(keep(msg)))
    await natsraw.read_back_ordered(nats_url, VOTES_STREAM, VOTES_ALL, expected, max(120.0, expected / 5000), each)
    return records


def _report(name: str, seconds: float, count: int) -> None:
    print(f"{name:<15} {seconds:7.2f} s  {count / seconds:9,.0f} events/s", flush=True)


def _timed(name: str, started: float, count: int) -> None:
    _report(name, time.perf_counter() - started, count)


async def measure(nats_url: str, database_url: str, count: int) -> None:
    await bootstrap(nats_url, database_url)
    catalog = decode_catalog(DEMO_CATALOG.read_bytes())
    _, seconds = await natsraw.publish_async(nats_url, natsraw.synthetic_events(catalog, count))
    _report("load", seconds, count)
    records: list[StreamRecord] = []
    for name, keep in (("read", None), ("read+metadata", _from_metadata), ("read+reply", _from_reply)):
        started = time.perf_counter()
        kept = await read_stream(nats_url, count, keep)
        if keep is not None:  # the last pass's records are the ones decoded below
            records = kept
        _timed(name, started, count)
    started = time.perf_counter()
    events, dead = decode_records(records)
    _timed("decode", started, count)
    if dead:
        print(f"  {len(dead)} dead letters: {dead[0][1]}")
    started = time.perf_counter()
    state = FoldState()
    for i in range(0, len(events), _BATCH):
        outcome = fold(events[i : i + _BATCH], state, ballots_per_client_day=_NO_QUOTA)
        state.absorb(outcome)
    _timed("fold", started, count)
    print(f"  {len(state.ballots):,} ballots, {len(state.quotas):,} quotas in memory")
    nc = await nats.connect(nats_url, pending_size=64 * 1024 * 1024)
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    try:
        # The replay's two ways to read (replay.py), counting only, then the rebuild through each, alternately.
        for name, url in (("replay own", nats_url), ("replay nats-py", None)):
            started = time.perf_counter()
            await _drain(StreamReplay(nc.jetstream(), nats_url=url), count)
            _timed(name, started, count)
        for _ in range(2):
            for name, url in (("rebuild own", nats_url), ("rebuild nats-py", None)):
                started = time.perf_counter()
                await rebuild(nc, pool, database_url, ballots_per_client_day=_NO_QUOTA, nats_url=url)
                _timed(name, started, count)
    finally:
        await pool.close()
        await nc.close()


async def _drain(replay: StreamReplay, count: int) -> None:
    async def count_only(_: list[StreamRecord]) -> None:
        pass

    await replay.open()
    try:
        await replay.fold_until(count, count_only)
    finally:
        await replay.close()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with (
        tempfile.TemporaryDirectory(prefix="shipskip-rebuild-parts-") as folder,
        EmbeddedServers(Path(folder)) as servers,
    ):
        addresses = servers.addresses
        asyncio.run(measure(addresses.nats_url, addresses.database_url, count))


if __name__ == "__main__":
    main()
