"""A rebuild's first pass: fold the stream in memory, then write the whole result into the empty rebuild schema.

Folding through the tables costs every batch a round of reads (ballots, voids, quotas it touches) and four
upserts; a rebuild starts from nothing, so one state in memory holds all it would read, and COPY writes the rows
once at the end. The fold is the same pure function the projector runs, batch by batch as it would see them
(``fold_into``: into the state itself), so the rows are the ones the batch-by-batch path writes
(services/tally/store.py), tally rows holding zero included.

The fold runs in a worker process of its own, fed by the reading processes (readers.py), which read ranges of
the stream in parallel: on two cores or more, reading (the costlier part, through nats-py) and folding overlap.
The worker takes the ranges in order, so it folds the stream in order. It also writes the rows it holds, on a
connection of its own. Every process is started with ``spawn``, not ``fork``: the rebuild may run inside a
server's worker process (the read API's /admin).

Memory is bounded: past ``max_ballots`` ballots (SHIPSKIP_REBUILD_MEMORY_BALLOTS) the pass stops, its rows are
written, and the rebuild folds the rest of the stream through the tables as before."""

import asyncio
import gc
import multiprocessing
import multiprocessing.connection
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized

import asyncpg

from services.shared.config import NatsSettings
from services.shared.heap import freeze_heap
from services.tally.fold import Change, FoldState, TallyKey, bucket, fold_into
from services.tally.history import HistoryBatch, as_list
from services.tally.rebuild.readers import CHUNK, Message, Range, ranges, start_readers, stop_readers
from services.tally.store import POSITION_ROW, Projection, StreamRecord, decode_records, record_dead_letters

MAX_BALLOTS = 2_000_000
"""The default of SHIPSKIP_REBUILD_MEMORY_BALLOTS: ballots held in memory at most (some 400 MB of Python objects)."""

_PROGRESS_S = 0.5
"""How often the pass reports how far the worker has folded."""

_COLUMNS = {
    "ballots": ("comparison_id", "tool_id", "voter_id", "verdict", "seq", "counted", "history"),
    "tallies": ("comparison_id", "tool_id", "ship", "skip", "uncounted_ship", "uncounted_skip"),
    "client_quotas": ("comparison_id", "client", "day", "ballots"),
    "voided_voters": ("voter_id", "seq", "reason"),
    "forgotten_voters": ("voter_id", "seq"),
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
            "forgotten_voters": list(self.state.forgotten.items()),
            "tally_history": list(self.history.minute_rows()),
        }


# The worker process's side: one BulkFold and the pipes of the readers, kept between calls (the pool has one
# process, which runs them in order).
_worker_fold: BulkFold | None = None
_worker_pipes: list[Connection] = []
_worker_folded: "Synchronized[int] | None" = None


def _start_worker(ballots_per_client_day: int, pipes: list[Connection], folded: "Synchronized[int]") -> None:
    global _worker_fold, _worker_pipes, _worker_folded
    _worker_fold = BulkFold(ballots_per_client_day)
    _worker_pipes, _worker_folded = pipes, folded
    freeze_heap()
    # A rebuild killed outright (SIGKILL) cannot shut its pool down: the worker goes when its parent does.
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)


@dataclass
class PassResult:
    events: int = 0
    """Events folded."""
    folded_to: int = 0
    """The stream sequence every matching event up to which is folded."""
    dead: DeadLetters = field(default_factory=list)


class _Inbox:
    """The readers' messages, taken off their pipes as soon as they come (up to about a range ahead of the fold
    per reader), so that a reader's next batch is already here when the fold wants it: waiting on a pipe each
    time meant waiting for the reader's sending thread to get a core and its GIL, and on a loaded machine the
    fold worker then spent more time waiting than folding (500,000 events: 3.6 s waiting for 2.9 s of CPU)."""

    def __init__(self, pipes: list[Connection], limit: int) -> None:
        self._pipes = pipes
        self._limit = limit
        self._held: list[deque[Message]] = [deque() for _ in pipes]
        self._records = [0] * len(pipes)

    def take(self, reader: int) -> Message:
        """The next message of ``reader``, waiting for it if none is here yet."""
        held = self._held[reader]
        while not held:
            self._gather(self._pipes[reader])
        message = held.popleft()
        self._records[reader] -= _records_in(message)
        self._gather()
        return message

    def _gather(self, waiting_for: Connection | None = None) -> None:
        """Take in what the pipes hold without waiting (but for ``waiting_for``), each reader up to the limit."""
        for index, pipe in enumerate(self._pipes):
            while self._records[index] < self._limit and (pipe is waiting_for or pipe.poll()):
                try:
                    message: Message = pipe.recv()
                except EOFError:
                    if pipe is waiting_for:
                        raise RuntimeError("a reader of the stream ended before its ranges did") from None
                    break  # (told when its turn comes, if it had more to send)
                self._held[index].append(message)
                self._records[index] += _records_in(message)
                if pipe is waiting_for:
                    waiting_for = None


def _records_in(message: Message) -> int:
    return len(message[1]) if message[0] == "batch" else 0  # type: ignore[arg-type]


def _fold_ranges(all_ranges: list[Range], max_ballots: int) -> PassResult:
    """Fold the readers' ranges in order, until they end or the state holds ``max_ballots`` ballots; the pipes
    are closed after (a reader still sending stops)."""
    assert _worker_fold is not None, "the worker starts with _start_worker"
    assert _worker_folded is not None, "the worker starts with _start_worker"
    result = PassResult()
    inbox = _Inbox(_worker_pipes, CHUNK)
    try:
        for index, (_, last) in enumerate(all_ranges):
            while True:
                message = inbox.take(index % len(_worker_pipes))
                if message[0] == "end":
                    break
                if message[0] == "error":
                    raise RuntimeError(f"a reader of the stream failed: {message[1]}")
                _, seqs, subjects, datas = message
                result.dead += _worker_fold.take(zip(seqs, subjects, datas, strict=True))  # type: ignore[call-overload]
                result.events += len(seqs)  # type: ignore[arg-type]
                result.folded_to = seqs[-1]  # type: ignore[index]
                _worker_folded.value = result.events
                # What the fold keeps (ballots, quotas, tallies) lives until the rows are written, and it grows by
                # the batch: Python's full collections walked all of it again and again. Frozen, a collection walks
                # only what came since (refcounting still frees what dies; the fold makes no cycles). 1,000,000
                # events: 7.1-7.7 s -> 5.2-5.8 s.
                gc.freeze()
                if len(_worker_fold.state.ballots) >= max_ballots:
                    return result
            result.folded_to = last
        return result
    finally:
        for pipe in _worker_pipes:
            pipe.close()


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
    nats: NatsSettings,
    comparison_id: str | None,
    head: int,
    progress: Callable[[int], Awaitable[None]],
    max_ballots: int,
) -> PassResult:
    """Fold the stream up to ``head`` (or ``max_ballots``) in memory and write it into ``projection``'s schema.

    ``progress`` is called with the events folded so far, every ``_PROGRESS_S``. Returns what was folded: the
    rebuild goes on from ``folded_to`` through the tables.
    """
    if max_ballots <= 0 or head <= 0:
        return PassResult()
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")
    all_ranges = ranges(1, head)
    folded = context.Value("q", 0)
    readers, pipes = start_readers(nats, comparison_id, all_ranges)
    try:
        limit = projection.ballots_per_client_day
        with ProcessPoolExecutor(
            1, mp_context=context, initializer=_start_worker, initargs=(limit, pipes, folded)
        ) as worker:
            try:
                folding = loop.run_in_executor(worker, _fold_ranges, all_ranges, max_ballots)
                for pipe in pipes:  # the worker (started by now) has its own: once it closes them, readers stop
                    pipe.close()
                while not folding.done():
                    await asyncio.wait({folding}, timeout=_PROGRESS_S)
                    await progress(folded.value)
                result = folding.result()
            except BaseException:
                stop_readers(readers, kill=True)  # the worker, waiting for them, then fails too and the pool ends
                raise
            if result.dead:
                async with pool.acquire() as conn:
                    await record_dead_letters(conn, result.dead)
            await loop.run_in_executor(worker, _copy_in_worker, database_url, projection.schema, result.folded_to)
            return result
    finally:
        stop_readers(readers)
