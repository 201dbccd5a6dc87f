"""Moderation: voiding a voter appends an event; the projector removes their ballots from every tally.

Before it appends, ``void_voter`` looks the voter up, so that a typo or a repeat does not pass in silence:
- already voided (a void still on its way to the projector, the last moderation event naming the voter; else
  the row in ``voided_voters``): nothing is appended, and the answer says so with the earlier void's reason
  (not an error: the voter is voided);
- no ballot in the projection: refused (``UnknownVoter``) unless ``force``. A void also stops the ballots a
  voter casts later, so voiding ahead of any ballot is allowed, but only when asked for in so many words.
"""

import re
from datetime import UTC, datetime

import asyncpg
import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.events import Event, VoterForgotten, VoterVoided, decode_event, encode_event
from contracts.subjects import MODERATION_SUBJECT, VOTES_STREAM, VOTES_SUBJECT_PREFIX
from services.operators.plurals import plural
from services.shared.event_ids import new_event_id
from services.tally.fold import FORGOTTEN
from services.tally.layout import partition_positions

VOTER_ID = re.compile(r"[0-9a-f]{32}")
"""Voter ids in events are 32 hex characters (a keyed hash); operators find them in reports, never a token."""

MAX_REASON = 500
PENDING_SCAN_LIMIT = 10_000
"""At most this many moderation events past the projector are read to find a void not yet folded."""

_ROUTED_MODERATION = VOTES_SUBJECT_PREFIX + "*.*." + MODERATION_SUBJECT.removeprefix(VOTES_SUBJECT_PREFIX)
"""The moderation subject once the stream routes by partition (services/tally/routing.py)."""


class InvalidVoid(ValueError):
    pass


class UnknownVoter(LookupError):
    def __init__(self, voter_id: str, lag_events: int) -> None:
        self.voter_id = voter_id
        self.lag_events = lag_events
        behind = f" (the projector is {plural(lag_events, 'event')} behind)" if lag_events else ""
        super().__init__(f"voter {voter_id} has no ballots{behind}")


class VoidOutcome(msgspec.Struct, frozen=True):
    voter_id: str
    voided: bool
    """True: this call appended a void; False: the voter was already voided, and nothing was appended."""
    event_id: str
    """The void appended now, or the earlier one (empty when the earlier one is folded: the table keeps no id)."""
    reason: str
    """This void's reason, or the earlier one's."""
    ballots: int
    """The voter's ballots in the projection (cast or retracted), in every comparison."""
    comparisons: int
    seq: int | None = None
    """The stream sequence of the earlier void (None for a new one until the stream acknowledges it)."""
    pending: bool = False
    """The earlier void is in the stream but not yet folded."""


def check_void(voter_id: str, reason: str) -> str:
    """The reason, stripped; InvalidVoid names what is wrong."""
    if not VOTER_ID.fullmatch(voter_id):
        raise InvalidVoid(f"{voter_id[:80]!r} is not a voter id (32 hex characters, as `shipskip voters` shows)")
    reason = reason.strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise InvalidVoid(f"give a reason of 1 to {MAX_REASON} characters")
    return reason


async def void_voter(
    js: JetStreamContext, pool: asyncpg.Pool, voter_id: str, reason: str, *, force: bool = False
) -> VoidOutcome:
    reason = check_void(voter_id, reason)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        voided = await conn.fetchrow("select seq, reason from voided_voters where voter_id = $1", voter_id)
        held = await conn.fetchrow(
            "select count(*), count(distinct comparison_id) from ballots where voter_id = $1", voter_id
        )
        positions = await partition_positions(conn)
    ballots, comparisons = (int(held[0]), int(held[1])) if held is not None else (0, 0)
    position = min(positions.values(), default=0)
    pending = await _pending_moderation(js, voter_id, position)
    if pending is not None:
        seq, event = pending
        if isinstance(event, VoterVoided | VoterForgotten):
            reason = event.reason if isinstance(event, VoterVoided) else FORGOTTEN
            return VoidOutcome(voter_id, False, event.event_id, reason, ballots, comparisons, seq=seq, pending=True)
    elif voided is not None:
        return VoidOutcome(voter_id, False, "", voided["reason"], ballots, comparisons, seq=voided["seq"])
    if not ballots and not force:
        head = int((await js.stream_info(VOTES_STREAM)).state.last_seq or 0)
        raise UnknownVoter(voter_id, max(0, head - position))
    event = VoterVoided(event_id=new_event_id(), voter_id=voter_id, reason=reason, at=datetime.now(UTC))
    ack = await js.publish(MODERATION_SUBJECT, encode_event(event), headers={"Nats-Msg-Id": event.event_id}, timeout=5)
    return VoidOutcome(voter_id, True, event.event_id, reason, ballots, comparisons, seq=ack.seq)


async def _pending_moderation(js: JetStreamContext, voter_id: str, position: int) -> tuple[int, Event] | None:
    """The last moderation event naming ``voter_id`` in the stream past ``position`` (appended, not folded yet).

    The last one decides, whatever its type: the projector will fold them in order.
    """
    found: tuple[int, Event] | None = None
    for subject in (MODERATION_SUBJECT, _ROUTED_MODERATION):
        seq = position
        for _ in range(PENDING_SCAN_LIMIT):
            try:
                message = await js.get_msg(VOTES_STREAM, seq + 1, subject=subject, next=True)
            except NotFoundError:
                break
            seq = int(message.seq or seq + 1)
            try:
                event = decode_event(message.data or b"")
            except msgspec.DecodeError:
                continue  # a dead letter to be: the projector will set it aside
            if event.voter_id == voter_id and (found is None or seq > found[0]):
                found = (seq, event)
    return found
