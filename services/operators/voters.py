"""``shipskip voters``: who is behind a comparison's votes in a window, per voter and per client-address hash.

Read from the stream, not from the projection. The ballots table holds neither the client-address hash nor the
time of a ballot, and giving it both would widen every row the projector writes per vote and the rebuild's bulk
load, for a question asked rarely; the events carry both (``origin.client``, ``at``). A comparison's events are
stored under subjects of their own (contracts/subjects.py), so a consumer filtered on them, starting at the
window's start time, reads that comparison's events of the window and nothing else: the cost falls on the
operator's query, in proportion to the window, never on the vote path (200,000 events took 7 s of CPU, most of
it nats-py's delivery, on a 2-core machine under load).

The client hash is keyed per UTC day (services/votes/identity.py): one address gives one hash a day, so the
same address on two days counts as two clients. The projection adds what it knows of the voters listed: whether
they are voided or forgotten (they asked for it: their events stay in the stream, their ballots hold no verdict),
and how many of their ballots in the comparison count now.
"""

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.events import VoteCast, VoteRetracted, decode_event
from contracts.subjects import VOTES_STREAM
from services.operators.known import UnknownId, comparison_subjects, require_comparison, tool_known

DEFAULT_SINCE = "24h"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
STALL_TIMEOUT_S = 30.0
"""How long the read waits for an event the stream said was pending before it gives up."""

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class InvalidQuery(ValueError):
    pass


def parse_since(text: str) -> timedelta | None:
    """``30m``, ``1h``, ``2d``, ``1h30m``, ``90s``; ``all`` for the whole history (None)."""
    text = text.strip().lower()
    if text == "all":
        return None
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise InvalidQuery(f"{text[:40]!r} is not a duration: give one like 30m, 1h, 2d, 1h30m, or 'all'")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total_s = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total_s <= 0:
        raise InvalidQuery(f"{text!r}: the window must be longer than 0")
    if total_s > 36500 * 86400:
        raise InvalidQuery(f"{text[:40]!r}: a window that long reaches before any vote; use 'all'")
    return timedelta(seconds=total_s)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"the limit must be 1 to {MAX_LIMIT}, not {limit}")
    return limit


class VoterRow(msgspec.Struct, frozen=True):
    voter_id: str
    ballots: int
    """Tools this voter cast a vote on in the window."""
    casts: int
    retractions: int
    clients: int
    """Distinct client-address hashes their events came from."""
    first_seen: datetime
    last_seen: datetime
    voided: bool
    counted_now: int
    """Their ballots in the comparison (the tool, if one was asked for) that count now, in the projection."""
    uncounted_now: int
    """Their ballots held there that do not count (counting policy, moderation)."""
    forgotten: bool = False
    """They asked to be forgotten (DELETE /v1/voters/me): voided too, and none of their ballots holds a verdict."""


class ClientRow(msgspec.Struct, frozen=True):
    client: str
    """The keyed per-day hash of the client address, as events carry it."""
    voters: int
    ballots: int
    """(voter, tool) pairs cast from this client in the window."""
    casts: int
    retractions: int
    first_seen: datetime
    last_seen: datetime


class VotersReport(msgspec.Struct, frozen=True):
    comparison_id: str
    tool_id: str | None
    since: datetime | None
    """The window's start (None: the whole history); its end is ``last_seq``, the stream head when read."""
    first_seq: int | None
    last_seq: int
    """The stream head when the read started: events after it are not counted."""
    events: int
    casts: int
    retractions: int
    voters: int
    clients: int
    without_client: int
    """Events that carry no client-address hash (the votes service did not see an address)."""
    undecodable: int
    """Events of the comparison that today's reader cannot decode (dead letters)."""
    top_voters: list[VoterRow]
    top_clients: list[ClientRow]


@dataclass
class _Voter:
    tools: set[str] = field(default_factory=set)
    clients: set[str] = field(default_factory=set)
    casts: int = 0
    retractions: int = 0
    first: datetime | None = None
    last: datetime | None = None


@dataclass
class _Client:
    voters: set[str] = field(default_factory=set)
    ballots: set[tuple[str, str]] = field(default_factory=set)
    casts: int = 0
    retractions: int = 0
    first: datetime | None = None
    last: datetime | None = None


def _seen(entry: _Voter | _Client, at: datetime) -> None:
    if entry.first is None or at < entry.first:
        entry.first = at
    if entry.last is None or at > entry.last:
        entry.last = at


class _Window:
    """What the events of the window add up to."""

    def __init__(self, tool_id: str | None) -> None:
        self.tool_id = tool_id
        self.voters: dict[str, _Voter] = {}
        self.clients: dict[str, _Client] = {}
        self.first_seq: int | None = None
        self.events = self.casts = self.retractions = self.without_client = self.undecodable = 0

    def take(self, seq: int, data: bytes) -> None:
        try:
            event = decode_event(data)
        except msgspec.DecodeError:
            self.undecodable += 1
            return
        if not isinstance(event, VoteCast | VoteRetracted):
            return
        if self.tool_id is not None and event.tool_id != self.tool_id:
            return
        if self.first_seq is None:
            self.first_seq = seq
        self.events += 1
        cast = isinstance(event, VoteCast)
        voter = self.voters.get(event.voter_id)
        if voter is None:
            voter = self.voters[event.voter_id] = _Voter()
        _seen(voter, event.at)
        client_hash = event.origin.client
        if cast:
            self.casts += 1
            voter.casts += 1
            voter.tools.add(event.tool_id)
        else:
            self.retractions += 1
            voter.retractions += 1
        if client_hash is None:
            self.without_client += 1
            return
        voter.clients.add(client_hash)
        client = self.clients.get(client_hash)
        if client is None:
            client = self.clients[client_hash] = _Client()
        _seen(client, event.at)
        client.voters.add(event.voter_id)
        if cast:
            client.casts += 1
            client.ballots.add((event.voter_id, event.tool_id))
        else:
            client.retractions += 1


async def find_voters(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    comparison_id: str,
    *,
    tool_id: str | None,
    since: timedelta | None,
    limit: int,
) -> VotersReport:
    """``voters_report`` for ids that name something: UnknownId (InvalidId) otherwise.

    A tool is known when the catalogue lists it in the comparison, the projection holds ballots of it, or the
    window holds events of it.
    """
    await require_comparison(js, pool, comparison_id)
    tool_checked = tool_id is None or await tool_known(js, pool, comparison_id, tool_id)
    report = await voters_report(js, pool, comparison_id, tool_id=tool_id, since=since, limit=check_limit(limit))
    if not tool_checked and not report.events:
        raise UnknownId("tool", f"no tool {tool_id!r} in {comparison_id}: not in the catalogue, no ballots, no events")
    return report


async def voters_report(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    comparison_id: str,
    *,
    tool_id: str | None = None,
    since: timedelta | None = timedelta(hours=24),
    limit: int = DEFAULT_LIMIT,
) -> VotersReport:
    """The comparison's (or one tool's) events since ``now - since``, per voter and client, the busiest first.

    The caller checks that the comparison is known (services/operators/known.py).
    """
    start = datetime.now(UTC) - since if since is not None else None
    head = int((await js.stream_info(VOTES_STREAM)).state.last_seq or 0)
    window = _Window(tool_id)
    await _read_window(js, comparison_id, start, head, window)
    busiest = sorted(window.voters.items(), key=lambda item: (-(item[1].casts + item[1].retractions), item[0]))
    top = busiest[:limit]
    voided, forgotten, held = await _projection_of(pool, comparison_id, tool_id, [voter for voter, _ in top])
    top_voters = [
        VoterRow(
            voter_id=voter,
            ballots=len(v.tools),
            casts=v.casts,
            retractions=v.retractions,
            clients=len(v.clients),
            first_seen=_known(v.first),
            last_seen=_known(v.last),
            voided=voter in voided,
            counted_now=held.get(voter, (0, 0))[0],
            uncounted_now=held.get(voter, (0, 0))[1],
            forgotten=voter in forgotten,
        )
        for voter, v in top
    ]
    # Many voters behind one address is the pattern to look for; then the busiest.
    clients = sorted(
        window.clients.items(), key=lambda item: (-len(item[1].voters), -(item[1].casts + item[1].retractions), item[0])
    )
    top_clients = [
        ClientRow(
            client=name,
            voters=len(c.voters),
            ballots=len(c.ballots),
            casts=c.casts,
            retractions=c.retractions,
            first_seen=_known(c.first),
            last_seen=_known(c.last),
        )
        for name, c in clients[:limit]
    ]
    return VotersReport(
        comparison_id=comparison_id,
        tool_id=tool_id,
        since=start,
        first_seq=window.first_seq,
        last_seq=head,
        events=window.events,
        casts=window.casts,
        retractions=window.retractions,
        voters=len(window.voters),
        clients=len(window.clients),
        without_client=window.without_client,
        undecodable=window.undecodable,
        top_voters=top_voters,
        top_clients=top_clients,
    )


def _known(at: datetime | None) -> datetime:
    assert at is not None  # every entry is made by an event, which set it
    return at


async def _read_window(
    js: JetStreamContext, comparison_id: str, start: datetime | None, head: int, window: _Window
) -> None:
    """Feed ``window`` the comparison's events from ``start`` up to stream sequence ``head``.

    An ordered push consumer (ephemeral, no acks, flow control, made again by nats-py past a gap): nats-py
    delivers several times as many messages a second this way as with a pull ``fetch``.
    """
    if head == 0:
        return
    config = ConsumerConfig(filter_subjects=comparison_subjects(comparison_id), inactive_threshold=60.0)
    if start is not None:
        config.opt_start_time = start
    reached = asyncio.Event()
    progress = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        metadata = msg.metadata
        seq = metadata.sequence.stream
        if seq <= head:
            window.take(seq, msg.data)
        progress.set()
        if seq >= head or not metadata.num_pending:
            reached.set()

    subscription = await js.subscribe(
        "",  # the config's filter subjects say what to read
        stream=VOTES_STREAM,
        cb=on_message,
        config=config,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_TIME if start is not None else DeliverPolicy.ALL,
        pending_msgs_limit=1_000_000,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    try:
        info = await subscription.consumer_info()
        if not info.num_pending:
            return
        while not reached.is_set():
            progress.clear()
            try:
                await asyncio.wait_for(progress.wait(), STALL_TIMEOUT_S)
            except TimeoutError:
                stalled = f"the stream sent nothing for {STALL_TIMEOUT_S:.0f} s while events were pending"
                raise TimeoutError(stalled) from None
    finally:
        await subscription.unsubscribe()


async def _projection_of(
    pool: asyncpg.Pool, comparison_id: str, tool_id: str | None, voters: list[str]
) -> tuple[set[str], set[str], dict[str, tuple[int, int]]]:
    """Of ``voters``: those voided, those forgotten, and per voter (counted, uncounted) ballots with a verdict now."""
    if not voters:
        return set(), set(), {}
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        voided = {r[0] for r in await conn.fetch("select voter_id from voided_voters where voter_id = any($1)", voters)}
        forgotten = {
            r[0] for r in await conn.fetch("select voter_id from forgotten_voters where voter_id = any($1)", voters)
        }
        rows = await conn.fetch(
            "select voter_id, count(*) filter (where counted), count(*) filter (where not counted)"
            " from ballots where comparison_id = $1 and voter_id = any($2::text[]) and verdict is not null"
            " and ($3::text is null or tool_id = $3) group by voter_id",
            comparison_id,
            voters,
            tool_id,
        )
    return voided, forgotten, {r[0]: (int(r[1]), int(r[2])) for r in rows}
