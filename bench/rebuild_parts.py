"""Where a rebuild's time goes, one stage at a time (not part of ``make bench``).

    .venv/bin/python -m bench.rebuild_parts [EVENTS]

Starts embedded servers in a temporary folder, appends EVENTS synthetic votes (default 1,000,000, shaped as the
rebuild benchmark's replay stream), then times each stage of a replay on its own, in one process:

- ``read``: nats-py's ordered push consumer, counting messages only (the rebuild benchmark's baseline);
- ``read+metadata``: the same, keeping (stream sequence, subject, data) through ``msg.metadata``;
- ``read+reply``: the same, the stream sequence cut from the reply subject instead (services/shared/deliveries.py);
- ``decode``: ``decode_records`` over the kept records (msgspec, the event contracts);
- ``fold``: the pure fold over all of them in memory, 5,000 events a call, as verify folds;
- ``replay``: the replay (services/tally/rebuild/replay.py, pull requests through nats-py), handing batches to a
  fold that does nothing;
- ``rebuild``: the rebuild itself (services/tally/rebuild/rebuild.py), in this process, all of the above and the
  writes, twice.

Each line gives the wall time, the events a second and this process's CPU time per event. A rebuild's reading
processes and fold worker are processes of their own: its lines give their CPU time instead (ended children, from
``getrusage``), and how busy the machine's cores were over the rebuild (``/proc/stat``), which says whether the
rebuild waited on something or on the CPU itself.
"""

import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
from nats.aio.msg import Msg

from bench import natsraw
from bench.one_path import cpu_s
from bench.procs import machine_busy_s
from contracts.catalog import decode_catalog
from contracts.subjects import VOTES_ALL, VOTES_STREAM
from infra.stack.bootstrap import DEMO_CATALOG, bootstrap
from infra.stack.servers import EmbeddedServers
from services.shared.config import NatsSettings
from services.shared.deliveries import delivery_sequences
from services.shared.jetstream import connect
from services.tally.fold import FoldState, fold
from services.tally.rebuild.rebuild import rebuild
from services.tally.rebuild.replay import StreamReplay
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


def _report(name: str, seconds: float, count: int, cpu: float | None = None) -> None:
    per_event = f"  {1e6 * cpu / count:5.1f} µs of CPU an event" if cpu is not None else ""
    print(f"{name:<15} {seconds:7.2f} s  {count / seconds:9,.0f} events/s{per_event}", flush=True)


def _timed(name: str, started: tuple[float, float], count: int) -> None:
    _report(name, time.perf_counter() - started[0], count, cpu_s() - started[1])


def _now() -> tuple[float, float]:
    return time.perf_counter(), cpu_s()


async def measure(nats_url: str, database_url: str, count: int) -> None:
    await bootstrap(NatsSettings(nats_url), database_url)
    catalog = decode_catalog(DEMO_CATALOG.read_bytes())
    _, seconds = await natsraw.publish_async(nats_url, natsraw.synthetic_events(catalog, count))
    _report("load", seconds, count)
    records: list[StreamRecord] = []
    for name, keep in (("read", None), ("read+metadata", _from_metadata), ("read+reply", _from_reply)):
        started = _now()
        kept = await read_stream(nats_url, count, keep)
        if keep is not None:  # the last pass's records are the ones decoded below
            records = kept
        _timed(name, started, count)
    started = _now()
    events, dead = decode_records(records)
    _timed("decode", started, count)
    if dead:
        print(f"  {len(dead)} dead letters: {dead[0][1]}")
    started = _now()
    state = FoldState()
    for i in range(0, len(events), _BATCH):
        outcome = fold(events[i : i + _BATCH], state, ballots_per_client_day=_NO_QUOTA)
        state.absorb(outcome)
    _timed("fold", started, count)
    print(f"  {len(state.ballots):,} ballots, {len(state.quotas):,} quotas in memory")
    nc = await connect(NatsSettings(nats_url), "shipskip-bench")
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    try:
        # The replay (replay.py), counting only, then the rebuild.
        started = _now()
        await _drain(StreamReplay(nc), count)
        _timed("replay", started, count)
        for _ in range(2):
            began, children, busy = time.perf_counter(), cpu_s(resource.RUSAGE_CHILDREN), machine_busy_s()
            await rebuild(nc, pool, database_url, nats=NatsSettings(nats_url), ballots_per_client_day=_NO_QUOTA)
            seconds = time.perf_counter() - began
            _report("rebuild", seconds, count)
            children = cpu_s(resource.RUSAGE_CHILDREN) - children
            print(
                f"  readers and fold worker {1e6 * children / count:.1f} µs of CPU an event;"
                f" the machine's {os.cpu_count()} cores busy {machine_busy_s() - busy:.1f} of"
                f" {(os.cpu_count() or 1) * seconds:.1f} CPU seconds",
                flush=True,
            )
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
