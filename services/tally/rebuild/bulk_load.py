"""A rebuild's first pass: fold the stream in memory, then write the whole result into the empty rebuild schema.

Folding through the tables costs every batch a round of reads (ballots, voids, quotas it touches) and four
upserts; a rebuild starts from nothing, so one state in memory holds all it would read, and COPY writes the rows
once at the end. The fold is the same pure function the projector runs, batch by batch as it would see them
(``fold_into``: into the state itself), so the rows are the ones the batch-by-batch path writes
(services/tally/store.py), tally rows holding zero included.

The fold runs in a worker process of its own while this one reads the stream (replay.py): on two cores the
decoding and folding overlap with the reading. The worker also writes the rows it holds, on a connection of its
own. It is started with ``spawn``, not ``fork``: the rebuild may run inside a server's worker process (the read
API's /admin).

Memory is bounded: past ``max_ballots`` ballots (SHIPSKIP_REBUILD_MEMORY_BALLOTS) the pass stops, its rows are
written, and the rebuild folds the rest of the stream through the tables as before."""

import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import asyncpg

from services.tally.fold import Change, FoldState, TallyKey, bucket, fold_into
from services.tally.history import HistoryBatch, as_list
from services.tally.rebuild.replay import FoldBatch, StreamReplay
from services.tally.store import POSITION_ROW, Projection, StreamRecord, decode_records, record_dead_letters

MAX_BALLOTS = 2_000_000
"""The default of SHIPSKIP_REBUILD_MEMORY_BALLOTS: ballots held in memory at most (some 400 MB of Python objects)."""

_BATCHES_IN_FLIGHT = 4
"""Batches handed to the worker and not folded yet, at most: it folds while the next ones are read."""

_COLUMNS = {
    "ballots": ("comparison_id", "tool_id", "voter_id", "verdict", "seq", "counted", "history"),
    "tallies": ("comparison_id", "tool_id", "ship", "skip", "uncounted_ship", "uncounted_skip"),
    "client_quotas": ("comparison_id", "client", "day", "ballots"),
    "voided_voters": ("voter_id", "seq", "reason"),
    "tally_history": ("comparison_id", "tool_id", "minute", "ship", "skip"),
    "projection_position": ("projection", "seq"),
}

Rows = dict[str, list[tuple[object, ...]]]
DeadLetters = list[tuple[StreamRecord, str]]


@dataclass
class BulkFold:
    """The state of a first pass: what the fold decided, and the voids with their sequence and reason."""

    ballots_per_client_day: int
    state: FoldState = field(default_factory=FoldState)
    voided: dict[str, tuple[int, str]] = field(default_factory=dict)
    history: HistoryBatch = field(default_factory=HistoryBatch)
    """The history of every ballot, voided voters' included until ``rows`` erases them."""
    _changes: list[Change] = field(default_factory=list)

    def take(self, records: Iterable[tuple[int, str, bytes]]) -> DeadLetters:
        """Fold one batch in memory; its dead letters are returned for the caller to record."""
        events, dead = decode_records(records)
        changes = self._changes
        fold_into(events, self.state, self.voided, ballots_per_client_day=self.ballots_per_client_day, changes=changes)
        self.history.add(changes, ())
        changes.clear()
        return dead

    def tally_rows(self) -> list[tuple[str, str, int, int, int, int]]:
        """One row per tool a ballot was ever cast on (as the upserts leave it: a retracted tool keeps zeros)."""
        counts: dict[TallyKey, list[int]] = {}
        for (comparison_id, tool_id, _), ballot in self.state.ballots.items():
            if ballot.counted is None:
                continue  # never cast (a retraction came first): the tables hold no tally row for it either
            row = counts.setdefault((comparison_id, tool_id), [0, 0, 0, 0])
            index = bucket(ballot.verdict, ballot.counted)
            if index is not None:
                row[index] += 1
        return [(c, t, *values) for (c, t), values in counts.items()]  # type: ignore[misc]

    def erase_voided(self) -> None:
        """Take the voided voters' changes out of the history, as the projector does at each void."""
        entries = self.history.entries
        for voter in self.voided:
            for key in self.state.keys_of_voter(voter):
                values = entries.pop(key, None)
                if values is not None:
                    self.history.erase([(key[0], key[1], values)])

    def rows(self) -> Rows:
        """Every row of the projection tables but the position, by table."""
        self.erase_voided()
        entries = self.history.entries
        return {
            "ballots": [
                (*key, b.verdict, b.seq, b.counted, as_list(held) if (held := entries.get(key)) is not None else None)
                for key, b in self.state.ballots.items()
            ],
            "tallies": list(self.tally_rows()),
            "client_quotas": [(*key, used) for key, used in self.state.quotas.items()],
            "voided_voters": [(voter, seq, reason) for voter, (seq, reason) in self.voided.items()],
            "tally_history": list(self.history.minute_rows()),
        }


# The worker process's side: one BulkFold, kept between calls (the pool has one process, which runs them in order).
_worker_fold: BulkFold | None = None


def _start_worker(ballots_per_client_day: int) -> None:
    global _worker_fold
    _worker_fold = BulkFold(ballots_per_client_day)
    # A rebuild killed outright (SIGKILL) cannot shut its pool down: the worker goes when its parent does.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


def _take_in_worker(seqs: list[int], subjects: list[str], data: list[bytes]) -> tuple[DeadLetters, int]:
    """Fold a batch; (its dead letters, the ballots now held). It comes as three columns: a list of records would
    pickle as one constructor call each, which costs the worker more than the fold."""
    assert _worker_fold is not None, "the worker starts with _start_worker"
    dead = _worker_fold.take(zip(seqs, subjects, data, strict=True))
    # What the fold keeps (ballots, quotas, tallies) lives until the rows are written, and it grows by the batch:
    # Python's full collections walked all of it again and again. Frozen, a collection walks only what came since
    # (refcounting still frees what dies; the fold makes no cycles). 1,000,000 events: 7.1-7.7 s -> 5.2-5.8 s.
    gc.freeze()
    return dead, len(_worker_fold.state.ballots)


def _copy_in_worker(database_url: str, schema: str, position: int) -> int:
    """Write the pass's rows into ``schema`` from the worker, which holds them; the ballots written.

    Sending them to the parent to write cost as much as writing them (200,000 ballots: 0.46 s to build, pickle
    and send, against 0.14 s for the COPY)."""
    assert _worker_fold is not None, "the worker starts with _start_worker"
    rows = _worker_fold.rows()
    rows["projection_position"] = [(POSITION_ROW, position)] if position else []
    asyncio.run(_copy_rows(database_url, schema, rows))
    return len(rows["ballots"])


async def _copy_rows(database_url: str, schema: str, rows: Rows) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            for table, table_rows in rows.items():
                if table_rows:
                    await conn.copy_records_to_table(
                        table, records=table_rows, columns=_COLUMNS[table], schema_name=schema
                    )
    finally:
        await conn.close()


async def bulk_load(
    pool: asyncpg.Pool,
    database_url: str,
    projection: Projection,
    replay: StreamReplay,
    head: int,
    progress: FoldBatch,
    max_ballots: int,
) -> int:
    """Fold the stream up to ``head`` (or ``max_ballots``) in memory and write it into ``projection``'s schema.

    ``progress`` is called after every batch read. Returns the number of ballots written.
    """
    if max_ballots <= 0:
        return 0
    loop = asyncio.get_running_loop()
    ballots = 0
    in_flight: deque[asyncio.Future[tuple[DeadLetters, int]]] = deque()

    async def settle_oldest() -> None:
        nonlocal ballots
        dead, ballots = await in_flight.popleft()
        if dead:
            async with pool.acquire() as conn:
                await record_dead_letters(conn, dead)

    context = multiprocessing.get_context("spawn")
    limit = projection.ballots_per_client_day
    with ProcessPoolExecutor(1, mp_context=context, initializer=_start_worker, initargs=(limit,)) as worker:

        async def take(records: list[StreamRecord]) -> None:
            columns = ([r.seq for r in records], [r.subject for r in records], [r.data for r in records])
            in_flight.append(loop.run_in_executor(worker, _take_in_worker, *columns))
            while len(in_flight) > _BATCHES_IN_FLIGHT:
                await settle_oldest()
            await progress(records)

        try:
            # The ballot count lags by the batches in flight: the pass may hold a few thousand more than asked.
            await replay.fold_until(head, take, stop=lambda: ballots >= max_ballots)
            while in_flight:
                await settle_oldest()
        finally:
            for future in in_flight:  # failed or interrupted: what is still in flight is not wanted
                future.cancel()
        return await loop.run_in_executor(worker, _copy_in_worker, database_url, projection.schema, replay.folded_to)
