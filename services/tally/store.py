"""Postgres side of the projection: fold one batch of stream messages in one transaction.

The transaction reads the position, skips what it already applied, reads what the batch touches (ballots,
quotas, voids), writes the changes, the dead letters and the new position, all or nothing (the
``eventsourcing`` library's tracking-record pattern). Writes are set-based (``unnest``), one statement a table.

A ``Projection`` works on the tables of one schema: ``public`` holds the live projection, a rebuild folds into
a schema of its own with the same tables and then copies them over (services/tally/rebuild/rebuild.py). A live projector
folds one partition (services/tally/partitions.py): the comparisons it owns and every void, with a position row
of its own; the rebuild, verify and dead-letter retries fold everything.
"""

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from contracts.events import (
    Event,
    VoteCast,
    VoteCastV0,
    VoteRetracted,
    VoterForgotten,
    VoterVoided,
    decode_event,
    upgrade,
)
from contracts.ids import Slug
from contracts.subjects import MODERATION_SUBJECT, published_subject, votes_subject
from services.tally.fold import Ballot, Counts, FoldOutcome, FoldState, ballot_keys, fold, quota_key
from services.tally.history import HistoryBatch, literal
from services.tally.partitions import Partition, PartitionGone

log = logging.getLogger(__name__)

LIVE_SCHEMA = "public"
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
"""Schema names are built into SQL text (they cannot be parameters), so only plain identifiers are allowed."""
POSITION_ROW = "tally"
PROJECTION_TABLES = (
    "ballots",
    "tallies",
    "client_quotas",
    "voided_voters",
    "forgotten_voters",
    "tally_history",
    "projection_position",
)
"""Every table derived from the stream (dead letters are a log for operators, not part of it)."""

Connection = asyncpg.Connection | PoolConnectionProxy
"""A plain connection or one borrowed from a pool."""


class StreamRecord(NamedTuple):
    """One message as fetched from the stream."""

    seq: int
    subject: str
    data: bytes


@dataclass
class BatchResult:
    position: int
    """The stream sequence folded up to, after this batch."""
    outcome: FoldOutcome = field(default_factory=FoldOutcome)
    dead_letters: int = 0
    skipped: int = 0
    """Messages at or below the position already recorded: redeliveries."""
    others: int = 0
    """Messages past the position that other partitions fold."""


def expected_subject(event: Event) -> str:
    return MODERATION_SUBJECT if isinstance(event, VoterVoided | VoterForgotten) else votes_subject(event.comparison_id)


class _CastIds(VoteCast, frozen=True, tag_field="type", tag="vote.cast/1", forbid_unknown_fields=True):
    """A ``VoteCast`` whose ids' ``Slug`` rule ``_checked`` applies instead of msgspec (see ``_decode``)."""

    comparison_id: str
    tool_id: str


class _RetractedIds(VoteRetracted, frozen=True, tag_field="type", tag="vote.retracted/1", forbid_unknown_fields=True):
    comparison_id: str
    tool_id: str


_ids_decoder = msgspec.json.Decoder(_CastIds | _RetractedIds | VoterVoided | VoterForgotten | VoteCastV0)
_ids_checked: dict[str, bool] = {}
"""Each comparison and tool id seen, and whether it is a ``Slug``: a catalogue's worth, bounded all the same."""


def _checked(value: str) -> bool:
    valid = _ids_checked.get(value)
    if valid is None:
        try:
            msgspec.convert(value, Slug)  # the contract's own rule, by msgspec itself
            valid = True
        except msgspec.ValidationError:
            valid = False
        if len(_ids_checked) < 100_000:
            _ids_checked[value] = valid
    return valid


def _decode(data: bytes) -> Event:
    """``decode_event``, the same events and the same errors, in a third of its time on the stream's votes.

    msgspec checks a ``Slug`` with its regular expression every time, which was two thirds of decoding a vote
    (1.85 of 2.3 µs an event in a rebuild's worker): here the two ids of a vote are decoded as plain strings
    (subclasses of the contract's events, so the fold sees a ``VoteCast``) and each distinct id is checked once.
    Anything else, or an id that is not a slug, goes through the contract's own decoder, which then raises its
    own error (tests/unit/test_decode_records.py holds the two to the same results).
    """
    try:
        event = _ids_decoder.decode(data)
    except msgspec.DecodeError:
        return decode_event(data)
    if isinstance(event, _CastIds | _RetractedIds) and not (_checked(event.comparison_id) and _checked(event.tool_id)):
        return decode_event(data)
    return upgrade(event)


def decode_records(
    records: Iterable[tuple[int, str, bytes]],
) -> tuple[list[tuple[int, Event]], list[tuple[StreamRecord, str]]]:
    """Split into decoded events and dead letters with their reasons.

    Records or plain (seq, subject, data) tuples: the rebuild's worker zips the columns it is sent, since making
    a StreamRecord of each cost it an eighth of its time (a NamedTuple is built by a Python-level ``__new__``).
    The published subject of each stored one is worked out once a call: a rebuild's worker spends most of its
    time here and in the fold, per event.
    """
    events: list[tuple[int, Event]] = []
    dead: list[tuple[StreamRecord, str]] = []
    published: dict[str, str] = {}  # stored subject -> the subject it was published on: a few per batch
    for seq, subject, data in records:
        try:
            event = _decode(data)
        except msgspec.DecodeError as exc:
            dead.append((StreamRecord(seq, subject, data), f"undecodable event: {exc}"))
            continue
        expected = expected_subject(event)
        stored_as = published.get(subject)
        if stored_as is None:
            stored_as = published[subject] = published_subject(subject)  # stored routed or not (routing.py)
        if stored_as != expected:
            dead.append((StreamRecord(seq, subject, data), f"event on subject {subject!r}, expected {expected!r}"))
            continue
        events.append((seq, event))
    return events, dead


_SQL_RECORD_DEAD_LETTERS = (
    "insert into public.dead_letters (seq, subject, data, reason)"
    " select * from unnest($1::bigint[], $2::text[], $3::bytea[], $4::text[]) as d(seq, subject, data, reason)"
    " where not exists (select 1 from public.dead_letters_discarded x where x.seq = d.seq)"
    " on conflict (seq) do update set reason = excluded.reason"
    # xmax is 0 in a row this statement inserted, and set in one it updated: tells new letters from known ones.
    " returning seq, (xmax = 0) as new"
)


async def record_dead_letters(conn: Connection, dead: Sequence[tuple[StreamRecord, str]]) -> None:
    """Keep what could not be folded for operators (``shipskip dead-letters``); the latest reason wins.

    Each letter is logged at warning when it is first set aside, not when a retry or a rebuild meets it again
    (a batch whose transaction then fails and is folded again logs its letters again). Those an operator
    discarded are not set aside again.
    """
    if not dead:
        return
    columns = _columns([(record.seq, record.subject, record.data, reason) for record, reason in dead], 4)
    rows = await conn.fetch(_SQL_RECORD_DEAD_LETTERS, *columns)
    new = {row[0] for row in rows if row[1]}
    for record, reason in dead:
        if record.seq in new:
            log.warning(
                "dead letter set aside: %s (shipskip dead-letters show %d)",
                reason,
                record.seq,
                extra={"seq": record.seq, "subject": record.subject},
            )


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows to the column arrays ``unnest`` takes."""
    return [[row[i] for row in rows] for i in range(width)]


class Projection:
    def __init__(
        self, ballots_per_client_day: int, schema: str = LIVE_SCHEMA, partition: Partition | None = None
    ) -> None:
        if not SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"not a schema name: {schema!r}")
        self.schema = schema
        self.ballots_per_client_day = ballots_per_client_day
        self.partition = partition
        """A live projector's partition: its position row must exist (claimed at start, services/tally/layout.py);
        None folds every comparison under the row 'tally', created when missing (rebuild schemas)."""
        self.position_row = partition.name if partition is not None else POSITION_ROW
        s = schema
        self._sql_position = f"select seq from {s}.projection_position where projection = $1"
        self._sql_lock_position = self._sql_position + " for update"
        self._sql_set_position = (
            f"insert into {s}.projection_position (projection, seq) values ($1, $2)"
            " on conflict (projection) do update set seq = excluded.seq"
        )
        self._sql_ballots = (
            "select b.comparison_id, b.tool_id, b.voter_id, b.verdict, b.seq, b.counted"
            " from unnest($1::text[], $2::text[], $3::text[]) as k(comparison_id, tool_id, voter_id)"
            f" join {s}.ballots b using (comparison_id, tool_id, voter_id)"
        )
        self._sql_ballots_of_voters = (
            f"select comparison_id, tool_id, voter_id, verdict, seq, counted, history from {s}.ballots"
            " where voter_id = any($1::text[])"
        )
        self._sql_voided = f"select voter_id from {s}.voided_voters where voter_id = any($1::text[])"
        # Another partition may have recorded a void this one has not reached yet: only those it folded count.
        self._sql_voided_until = self._sql_voided + " and seq <= $2"
        self._sql_forgotten = f"select voter_id, seq from {s}.forgotten_voters where voter_id = any($1::text[])"
        self._sql_forgotten_until = self._sql_forgotten + " and seq <= $2"
        self._sql_quotas = (
            "select q.comparison_id, q.client, q.day, q.ballots"
            " from unnest($1::text[], $2::text[], $3::text[]) as k(comparison_id, client, day)"
            f" join {s}.client_quotas q using (comparison_id, client, day)"
        )
        # The history entries come as array literals (unnest cannot take an array of arrays). A ballot that does
        # not count keeps none: a void erases them (services/tally/history.py).
        self._sql_write_ballots = (
            f"insert into {s}.ballots as b (comparison_id, tool_id, voter_id, verdict, seq, counted, history)"
            " select c, t, v, verdict, seq, counted, case when counted then h::bigint[] end"
            " from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::boolean[], $7::text[])"
            " as u(c, t, v, verdict, seq, counted, h)"
            " on conflict (comparison_id, tool_id, voter_id)"
            " do update set verdict = excluded.verdict, seq = excluded.seq, counted = excluded.counted,"
            " history = case when excluded.counted then b.history || excluded.history end"
        )
        self._sql_write_history = (
            f"insert into {s}.tally_history as h (comparison_id, tool_id, minute, ship, skip)"
            " select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])"
            " on conflict (comparison_id, tool_id, minute) do update set"
            " ship = h.ship + excluded.ship, skip = h.skip + excluded.skip"
        )
        self._sql_write_deltas = (
            f"insert into {s}.tallies as t (comparison_id, tool_id, ship, skip, uncounted_ship, uncounted_skip)"
            " select * from unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])"
            " on conflict (comparison_id, tool_id) do update set"
            " ship = t.ship + excluded.ship, skip = t.skip + excluded.skip,"
            " uncounted_ship = t.uncounted_ship + excluded.uncounted_ship,"
            " uncounted_skip = t.uncounted_skip + excluded.uncounted_skip"
        )
        self._sql_write_quotas = (
            f"insert into {s}.client_quotas (comparison_id, client, day, ballots)"
            " select * from unnest($1::text[], $2::text[], $3::text[], $4::integer[])"
            " on conflict (comparison_id, client, day) do update set ballots = excluded.ballots"
        )
        self._sql_write_voided = (
            f"insert into {s}.voided_voters (voter_id, seq, reason)"
            " select * from unnest($1::text[], $2::bigint[], $3::text[]) on conflict (voter_id) do nothing"
        )
        self._sql_write_forgotten = (
            f"insert into {s}.forgotten_voters (voter_id, seq)"
            " select * from unnest($1::text[], $2::bigint[]) on conflict (voter_id) do nothing"
        )
        self._sql_tallies = (
            f"select comparison_id, tool_id, ship, skip, uncounted_ship, uncounted_skip from {s}.tallies"
        )

    async def position(self, conn: Connection) -> int:
        seq = await conn.fetchval(self._sql_position, self.position_row)
        return int(seq) if seq is not None else 0

    async def apply_batch(self, conn: Connection, records: Sequence[StreamRecord]) -> BatchResult:
        """Fold the records past the recorded position and advance it; must be called inside a transaction.

        A partition folds only the records it owns, and advances its position past the others too.
        """
        position = await conn.fetchval(self._sql_lock_position, self.position_row)
        if position is None and self.partition is not None:
            # A rebuild re-partitioned (shipskip rebuild --partitions): this layout is gone, and folding on
            # would count what the new partitions count.
            raise PartitionGone(self.partition)
        position = int(position) if position is not None else 0
        fresh = [record for record in records if record.seq > position]
        if not fresh:
            return BatchResult(position=position, skipped=len(records))
        mine = fresh if self.partition is None else [record for record in fresh if self.partition.owns(record.subject)]
        result = await self.apply_records(conn, mine, voids_until=position) if mine else BatchResult(position=0)
        result.skipped = len(records) - len(fresh)
        result.others = len(fresh) - len(mine)
        result.position = max(record.seq for record in fresh)
        await conn.execute(self._sql_set_position, self.position_row, result.position)
        return result

    async def apply_records(
        self, conn: Connection, records: Sequence[StreamRecord], *, voids_until: int | None = None
    ) -> BatchResult:
        """Fold records whatever the position (dead-letter retries); the per-ballot sequences keep it in order.

        ``voids_until``: the voids recorded up to this sequence are the ones before these records (a partition's
        position: voids past it are in this batch or later ones); None takes every recorded void.
        """
        events, dead = decode_records(records)
        state, erasable = await self._state_for(conn, [event for _, event in events], voids_until)
        outcome = fold(events, state, ballots_per_client_day=self.ballots_per_client_day)
        await self._write(conn, outcome, erasable)
        await record_dead_letters(conn, dead)
        return BatchResult(position=0, outcome=outcome, dead_letters=len(dead))

    async def _state_for(
        self, conn: Connection, events: list[Event], voids_until: int | None
    ) -> tuple[FoldState, dict[str, list[tuple[str, str, list[int]]]]]:
        """The fold's state for the batch, and the history entries of the ballots of the voters it voids (by
        voter: if the fold voids them, their entries leave the history)."""
        state = FoldState()
        erasable: dict[str, list[tuple[str, str, list[int]]]] = {}
        keys = ballot_keys(events)
        if keys:
            for row in await conn.fetch(self._sql_ballots, *_columns(list(keys), 3)):
                state.ballots[(row[0], row[1], row[2])] = Ballot(row[3], row[4], row[5])
        voiding = [e.voter_id for e in events if isinstance(e, VoterVoided | VoterForgotten)]
        if voiding:
            for row in await conn.fetch(self._sql_ballots_of_voters, voiding):
                # A void reaches the voter's ballots in every comparison; each partition uncounts its own.
                if self.partition is None or self.partition.owns_comparison(row[0]):
                    state.ballots[(row[0], row[1], row[2])] = Ballot(row[3], row[4], row[5])
                    if row[6]:
                        erasable.setdefault(row[2], []).append((row[0], row[1], row[6]))
        voters = list({e.voter_id for e in events})
        if voters:
            if voids_until is None:
                rows = await conn.fetch(self._sql_voided, voters)
            else:
                rows = await conn.fetch(self._sql_voided_until, voters, voids_until)
            state.voided = {row[0] for row in rows}
            if voids_until is None:
                rows = await conn.fetch(self._sql_forgotten, voters)
            else:
                rows = await conn.fetch(self._sql_forgotten_until, voters, voids_until)
            state.forgotten = {row[0]: row[1] for row in rows}
        quota_keys = {key for e in events if isinstance(e, VoteCast) and (key := quota_key(e)) is not None}
        if quota_keys:
            for row in await conn.fetch(self._sql_quotas, *_columns(list(quota_keys), 3)):
                state.quotas[(row[0], row[1], row[2])] = row[3]
        return state, erasable

    async def _write(
        self, conn: Connection, outcome: FoldOutcome, erasable: dict[str, list[tuple[str, str, list[int]]]]
    ) -> None:
        history = HistoryBatch()
        # A voter voided by this batch: their changes, those of this batch and those recorded, leave the history.
        history.add(outcome.changes, outcome.voided)
        for voter in outcome.voided:
            history.erase(erasable.get(voter, ()))
        if outcome.ballots:
            entries = history.entries
            ballots = [
                (*key, b.verdict, b.seq, b.counted, literal(entries.get(key))) for key, b in outcome.ballots.items()
            ]
            await conn.execute(self._sql_write_ballots, *_columns(ballots, 7))
        minutes = history.minute_rows()
        if minutes:
            await conn.execute(self._sql_write_history, *_columns(minutes, 5))
        if outcome.deltas:
            deltas = [(*key, *delta) for key, delta in outcome.deltas.items()]
            await conn.execute(self._sql_write_deltas, *_columns(deltas, 6))
        if outcome.quotas:
            quotas = [(*key, used) for key, used in outcome.quotas.items()]
            await conn.execute(self._sql_write_quotas, *_columns(quotas, 4))
        if outcome.voided:
            voided = [(voter, seq, reason) for voter, (seq, reason) in outcome.voided.items()]
            await conn.execute(self._sql_write_voided, *_columns(voided, 3))
        if outcome.forgotten:
            await conn.execute(self._sql_write_forgotten, *_columns(list(outcome.forgotten.items()), 2))

    async def tallies(
        self, conn: Connection, comparison_ids: Sequence[str] | None = None
    ) -> dict[tuple[str, str], Counts]:
        if comparison_ids is None:
            rows = await conn.fetch(self._sql_tallies)
        else:
            rows = await conn.fetch(self._sql_tallies + " where comparison_id = any($1::text[])", list(comparison_ids))
        return {(r[0], r[1]): Counts(r[2], r[3], r[4], r[5]) for r in rows}


# The live projection's reads, for the read API (which does not fold, so the quota setting does not matter).
_live_reader = Projection(ballots_per_client_day=0)


async def read_position(conn: Connection) -> int:
    return await _live_reader.position(conn)


async def read_tallies(conn: Connection, comparison_ids: Sequence[str] | None = None) -> dict[tuple[str, str], Counts]:
    return await _live_reader.tallies(conn, comparison_ids)
