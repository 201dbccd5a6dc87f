"""Rebuild the projection from the stream with no downtime, or verify it without touching anything.

Rebuild: replay VOTES from the start into a schema of its own while the live tables keep serving, catch up to
the live head, then in one transaction lock the live positions (each partition's projector waits on its row),
fold the last few events up to the furthest of them, and copy the rebuilt rows over the live ones; every
partition then stands at the same position. ``partitions`` re-partitions the projection on the way (see
services/tally/layout.py): the rows of the old layout go, and its projectors stop at their next batch. An
interrupted rebuild leaves the live tables as they were; a Postgres advisory lock keeps two rebuilds from running
at once.

Verify: replay the stream into memory with the same pure fold, each partition's comparisons up to that
partition's position in a consistent snapshot of the live tallies, and list every difference.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client as NATS

from contracts.subjects import TALLY_RELOAD_SUBJECT, VOTES_STREAM
from services.shared.config import NatsSettings
from services.tally.fold import Counts, FoldState, bucket, fold
from services.tally.history import HistoryBatch, HistoryKey, time_of
from services.tally.layout import layout_count, lock_layout, partition_positions, set_layout
from services.tally.partitions import Partition
from services.tally.rebuild.bulk_load import MAX_BALLOTS, bulk_load
from services.tally.rebuild.replay import StreamReplay
from services.tally.routing import record_routing, route_stream
from services.tally.store import (
    LIVE_SCHEMA,
    PROJECTION_TABLES,
    Connection,
    Projection,
    StreamRecord,
    decode_records,
)

REBUILD_SCHEMA = "shipskip_rebuild"
_REBUILD_LOCK = 0x5A1B_0002
_SWAPPED_TABLES = tuple(table for table in PROJECTION_TABLES if table != "projection_position")
"""Replaced whole by a rebuild of everything; the positions are set by the layout (layout.py)."""
_CATCH_UP_MARGIN = 2000
"""Events the replay may trail the head by before it takes the lock for the swap."""


class RebuildRunning(Exception):
    """Another rebuild holds the lock."""


@dataclass
class Progress:
    kind: str
    comparison_id: str | None
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    phase: str = "replaying"

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        return max(0.0, (self.total - self.done) / rate) if rate > 0 else None


ProgressCallback = Callable[[Progress], None]


@dataclass
class Difference:
    comparison_id: str
    tool_id: str
    live: Counts
    expected: Counts
    minute: str | None = None
    """For the history projection: the minute (RFC 3339) whose change of ship and skip differs; None for the
    tallies."""


@dataclass
class RebuildReport:
    position: int
    events: int
    seconds: float


class _Run:
    """Bookkeeping of one rebuild or verification in ``rebuild_runs`` (what status and /admin show)."""

    def __init__(self, pool: asyncpg.Pool, progress: Progress, on_progress: ProgressCallback | None) -> None:
        self._pool = pool
        self.progress = progress
        self._on_progress = on_progress
        self._id: int | None = None
        self._written = 0.0

    async def start(self) -> None:
        self._id = await self._pool.fetchval(
            "insert into rebuild_runs (kind, comparison_id, state) values ($1, $2, 'running') returning id",
            self.progress.kind,
            self.progress.comparison_id,
        )

    async def update(self, replay: StreamReplay, *, force: bool = False, done: int = 0) -> None:
        """``done``: events folded before the replay began (the first pass, bulk_load.py)."""
        self.progress.done = done + replay.folded
        self.progress.total = max(done + replay.total, self.progress.done)
        await self.update_counts(force=force)

    async def update_counts(self, *, force: bool = False) -> None:
        """Report ``progress`` as it stands (written to its row once a second at most)."""
        if self._on_progress is not None:
            self._on_progress(self.progress)
        if force or time.monotonic() - self._written > 1.0:
            self._written = time.monotonic()
            await self._pool.execute(
                "update rebuild_runs set done = $2, total = $3 where id = $1",
                self._id,
                self.progress.done,
                self.progress.total,
            )

    async def finish(self, state: str, detail: str = "") -> None:
        await self._pool.execute(
            "update rebuild_runs set state = $2, detail = $3, done = $4, total = $5, finished_at = now() where id = $1",
            self._id,
            state,
            detail[:2000],
            self.progress.done,
            max(self.progress.total, self.progress.done),
        )


async def rebuild_in_progress(conn: Connection) -> bool:
    """Whether some process holds the rebuild lock right now (a row marked running may be a dead process's)."""
    held = await conn.fetchval(
        "select exists (select 1 from pg_locks where locktype = 'advisory' and classid = 0"
        " and objid = $1 and objsubid = 1 and granted)",
        _REBUILD_LOCK,
    )
    return bool(held)


async def _stream_head(nc: NATS) -> int:
    info = await nc.jetstream().stream_info(VOTES_STREAM)
    return int(info.state.last_seq or 0)


async def rebuild(
    nc: NATS,
    pool: asyncpg.Pool,
    database_url: str,
    *,
    nats: NatsSettings,
    ballots_per_client_day: int,
    comparison_id: str | None = None,
    on_progress: ProgressCallback | None = None,
    partitions: int | None = None,
    memory_ballots: int = MAX_BALLOTS,
) -> RebuildReport:
    """Rebuild every comparison (or one) from the stream and swap it in atomically. Needs a pool of 2+.

    ``nats``: how ``nc`` was connected, for the first pass's reading processes (readers.py).

    ``partitions``: the number of partitions to leave the projection in (a whole rebuild only); None keeps the
    layout it has. ``memory_ballots``: how many ballots the first pass may fold in memory (bulk_load.py).
    """
    if partitions is not None and (comparison_id is not None or partitions < 1):
        raise ValueError("re-partitioning takes a whole rebuild into at least one partition")
    lock = await asyncpg.connect(database_url)
    try:
        if not await lock.fetchval("select pg_try_advisory_lock($1)", _REBUILD_LOCK):
            since = await lock.fetchval(
                "select started_at from rebuild_runs where kind = 'rebuild' and state = 'running'"
                " order by id desc limit 1"
            )
            raise RebuildRunning(f"a rebuild is already running (since {since}); wait for it or stop it first")
        # Runs still marked running were interrupted (their process died with the lock).
        await lock.execute(
            "update rebuild_runs set state = 'failed', detail = 'interrupted', finished_at = now()"
            " where kind = 'rebuild' and state = 'running'"
        )
        run = _Run(pool, Progress("rebuild", comparison_id), on_progress)
        await run.start()
        try:
            report = await _rebuild_locked(
                nc, nats, pool, database_url, run, ballots_per_client_day, comparison_id, partitions, memory_ballots
            )
        except BaseException as exc:  # interrupted or failed: the live tables are as they were
            await run.finish("failed", f"{type(exc).__name__}: {exc}")
            raise
        await run.finish("done", f"position {report.position}")
        return report
    finally:
        await lock.close()  # releases the advisory lock


async def _rebuild_locked(
    nc: NATS,
    nats: NatsSettings,
    pool: asyncpg.Pool,
    database_url: str,
    run: _Run,
    ballots_per_client_day: int,
    comparison_id: str | None,
    partitions: int | None,
    memory_ballots: int,
) -> RebuildReport:
    started = time.monotonic()
    await _prepare_schema(pool)
    projection = Projection(ballots_per_client_day, schema=REBUILD_SCHEMA)
    # Re-partitioning routes the stream first (services/tally/routing.py): every event before the routing is then
    # below the position the swap leaves the partitions at. Should the rebuild fail, the projectors see a routing
    # that is not theirs and read every event until the next one succeeds.
    routed_since = await route_stream(nc.jetstream(), partitions) if partitions is not None else None

    # In memory and written at once while the stream is long (read in parallel, folded in a worker); through the
    # tables for what is left, from where that pass stopped.
    head = await _stream_head(nc)
    pass_total = head

    async def show_progress(done: int) -> None:
        run.progress.done, run.progress.total = done, max(pass_total, done)
        await run.update_counts()

    first_pass = await bulk_load(
        pool, database_url, projection, nats, comparison_id, head, show_progress, memory_ballots
    )
    await _index_as_live(pool)

    async def fold_into_rebuild(records: list[StreamRecord]) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await projection.apply_batch(conn, records)
        await run.update(replay, done=first_pass.events)

    replay = StreamReplay(nc, comparison_id, start=first_pass.folded_to + 1)
    await replay.open()
    try:
        await replay.fold_until(head, fold_into_rebuild)
        # Catch up with what arrived meanwhile, a few rounds at most: the swap folds the rest under the lock.
        for _ in range(5):
            head = await _stream_head(nc)
            if head - replay.folded_to <= _CATCH_UP_MARGIN:
                break
            await replay.fold_until(head, fold_into_rebuild)
        if comparison_id is None:  # these become the live tables: planner statistics before, not after, the swap
            await pool.execute("analyze " + ", ".join(f"{REBUILD_SCHEMA}.{table}" for table in _SWAPPED_TABLES))
        run.progress.phase = "swapping"
        async with pool.acquire() as conn, conn.transaction():
            await lock_layout(conn)
            live = await partition_positions(conn, lock=True)
            live_position = max(live.values(), default=0)
            await replay.fold_until(live_position, fold_into_rebuild)
            if comparison_id is None:
                layout = partitions or layout_count(live) or 1
                # Not ``replay.reached``: what is buffered past the live position is not in the rebuilt rows.
                position = max(live_position, replay.folded_to)
                await _swap_all(conn, layout, position)
                if partitions is not None and routed_since is not None:
                    await record_routing(conn, partitions, routed_since)
            else:
                await _swap_comparison(conn, comparison_id)
                position = live_position
        await run.update(replay, force=True, done=first_pass.events)
    finally:
        await replay.close()
    await pool.execute(f"drop schema if exists {REBUILD_SCHEMA} cascade")
    if nc.is_connected:
        await nc.publish(TALLY_RELOAD_SUBJECT, str(position).encode())
    events = first_pass.events + replay.folded
    return RebuildReport(position=position, events=events, seconds=time.monotonic() - started)


async def _prepare_schema(pool: asyncpg.Pool) -> None:
    """The rebuild's tables, shaped as the live ones but without their indexes yet (``_index_as_live``)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"drop schema if exists {REBUILD_SCHEMA} cascade")
        await conn.execute(f"create schema {REBUILD_SCHEMA}")
        for table in PROJECTION_TABLES:
            await conn.execute(
                f"create table {REBUILD_SCHEMA}.{table} (like {LIVE_SCHEMA}.{table} including all excluding indexes)"
            )
            # ``like`` copies no storage parameters: the live table's (ballots' fillfactor) must outlive the swap.
            options = await conn.fetchval(
                "select reloptions from pg_class where oid = $1::regclass", f"{LIVE_SCHEMA}.{table}"
            )
            if options:
                await conn.execute(f"alter table {REBUILD_SCHEMA}.{table} set ({', '.join(options)})")


async def _index_as_live(pool: asyncpg.Pool) -> None:
    """Give the rebuild's tables the live ones' indexes and key constraints, under the same names.

    Made once the first pass has copied its rows in: building an index over the rows costs Postgres less than
    keeping it up to date row by row during the COPY (200,000 ballots: 0.6 s against 0.4 s). The same names,
    since these tables become the live ones (``_swap_all``).
    """
    async with pool.acquire() as conn, conn.transaction():
        for table in PROJECTION_TABLES:
            live = f"{LIVE_SCHEMA}.{table}"
            for name, definition in await conn.fetch(
                "select conname, pg_get_constraintdef(oid) from pg_constraint"
                " where conrelid = $1::regclass and contype in ('p', 'u') order by conname",
                live,
            ):
                await conn.execute(f"alter table {REBUILD_SCHEMA}.{table} add constraint {name} {definition}")
            for (definition,) in await conn.fetch(
                "select pg_get_indexdef(i.indexrelid) from pg_index i where i.indrelid = $1::regclass"
                " and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid) order by 1",
                live,
            ):
                await conn.execute(definition.replace(f" ON {live} ", f" ON {REBUILD_SCHEMA}.{table} ", 1))


async def _swap_all(conn: asyncpg.pool.PoolConnectionProxy, partitions: int, position: int) -> None:
    """Put the rebuilt tables in the live ones' place, inside the caller's transaction; every partition (of the
    layout ``partitions``) then stands at ``position``: the rebuilt rows hold every event up to it.

    The live tables are dropped and the rebuilt ones, with the same indexes under the same names, moved into
    their schema: a few catalogue changes, however many rows (copying them over held the lock for about 1.2 s per
    200,000 ballots). Readers wait for the commit and then read the new tables; prepared statements are planned
    again by name.
    """
    for table in _SWAPPED_TABLES:
        await conn.execute(f"drop table {LIVE_SCHEMA}.{table}")
        await conn.execute(f"alter table {REBUILD_SCHEMA}.{table} set schema {LIVE_SCHEMA}")
    await set_layout(conn, partitions, position)


async def _swap_comparison(conn: asyncpg.pool.PoolConnectionProxy, comparison_id: str) -> None:
    """One comparison: its rows only. Voids are global and already in the live tables. The live positions stay:
    events past its partition's that the rebuild already folded are recognised by the ballots' sequences and
    change nothing."""
    for table in ("ballots", "tallies", "client_quotas", "tally_history"):
        await conn.execute(f"delete from {LIVE_SCHEMA}.{table} where comparison_id = $1", comparison_id)
        await conn.execute(
            f"insert into {LIVE_SCHEMA}.{table} select * from {REBUILD_SCHEMA}.{table} where comparison_id = $1",
            comparison_id,
        )


def history_of(state: FoldState, history: HistoryBatch) -> dict[HistoryKey, tuple[int, int]]:
    """The history's rows (the nonzero ones) of what ``history`` gathered, the voided voters' changes erased."""
    for voter in state.voided:
        for key in state.keys_of_voter(voter):
            held = history.entries.pop(key, None)
            if held is not None:
                history.erase([(key[0], key[1], held)])
    return {(c, t, m): (ship, skip) for c, t, m, ship, skip in history.minute_rows()}


async def live_history(conn: Connection, comparison_id: str | None) -> dict[HistoryKey, tuple[int, int]]:
    sql = "select comparison_id, tool_id, minute, ship, skip from tally_history where (ship <> 0 or skip <> 0)"
    if comparison_id is None:
        rows = await conn.fetch(sql)
    else:
        rows = await conn.fetch(sql + " and comparison_id = $1", comparison_id)
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}


def tallies_of(ballots: FoldState) -> dict[tuple[str, str], Counts]:
    """Count current ballots into tallies, as the live tables hold them."""
    counts: dict[tuple[str, str], list[int]] = {}
    for (comparison_id, tool_id, _), ballot in ballots.ballots.items():
        index = bucket(ballot.verdict, ballot.counted)
        if index is not None:
            counts.setdefault((comparison_id, tool_id), [0, 0, 0, 0])[index] += 1
    return {key: Counts(*values) for key, values in counts.items()}


async def verify(
    nc: NATS,
    pool: asyncpg.Pool,
    *,
    ballots_per_client_day: int,
    comparison_id: str | None = None,
    on_progress: ProgressCallback | None = None,
) -> tuple[int, list[Difference]]:
    """Recompute the tallies from the stream in memory; (position checked, differences from the live tables).

    Each partition's comparisons are folded up to that partition's position (the furthest is the one returned),
    each partition with a state of its own, as its projector folds them: comparisons are disjoint, voids are not.
    """
    live_reader = Projection(ballots_per_client_day)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        positions = await partition_positions(conn)
        live = await live_reader.tallies(conn, None if comparison_id is None else [comparison_id])
        live_minutes = await live_history(conn, comparison_id)
    layout = layout_count(positions) or 1
    partitions = [
        (p, positions.get(p.name, 0), FoldState(), HistoryBatch())
        for p in (Partition(i, layout) for i in range(layout))
    ]
    position = max(positions.values(), default=0)
    run = _Run(pool, Progress("verify", comparison_id), on_progress)
    await run.start()

    async def fold_in_memory(records: list[StreamRecord]) -> None:
        for partition, reached, state, history in partitions:
            mine = [r for r in records if r.seq <= reached and partition.owns(r.subject)]
            events, _ = decode_records(mine)
            outcome = fold(events, state, ballots_per_client_day=ballots_per_client_day)
            state.absorb(outcome)
            history.add(outcome.changes, ())
        await run.update(replay)

    replay = StreamReplay(nc, comparison_id)
    await replay.open()
    try:
        await replay.fold_until(position, fold_in_memory)
    except BaseException as exc:
        await run.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        await replay.close()
    expected: dict[tuple[str, str], Counts] = {}
    expected_minutes: dict[HistoryKey, tuple[int, int]] = {}
    for _, _, state, history in partitions:
        expected.update(tallies_of(state))
        expected_minutes.update(history_of(state, history))
    zero = Counts()
    differences = [
        Difference(key[0], key[1], live.get(key, zero), expected.get(key, zero))
        for key in sorted(live.keys() | expected.keys())
        if live.get(key, zero) != expected.get(key, zero)
    ]
    none = (0, 0)
    differences += [
        Difference(
            key[0],
            key[1],
            Counts(*live_minutes.get(key, none)),
            Counts(*expected_minutes.get(key, none)),
            minute=time_of(key[2]).isoformat().replace("+00:00", "Z"),
        )
        for key in sorted(live_minutes.keys() | expected_minutes.keys())
        if live_minutes.get(key, none) != expected_minutes.get(key, none)
    ]
    await run.update(replay, force=True)
    await run.finish("done", f"position {position}: {len(differences)} differences")
    return position, differences
