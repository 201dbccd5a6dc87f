"""The vote events, as stored in the VOTES stream.

Each event is a msgspec Struct tagged with ``"type": "<name>/<schema version>"``. A reader decodes any
version it knows and upgrades retired ones on read (``upgrade``), so the stream is never rewritten.
"""

from datetime import datetime
from typing import Literal

import msgspec

from contracts.ids import Slug

Verdict = Literal["ship", "skip"]


class Origin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where a vote came from, kept for abuse analysis only."""

    widget: str | None = None
    """The page origin the widget ran on (the request's Origin header), if any."""
    client: str | None = None
    """A keyed hash of the client address, with a key that rotates daily; never the address itself."""


class VoteCast(msgspec.Struct, frozen=True, tag_field="type", tag="vote.cast/1", forbid_unknown_fields=True):
    event_id: str
    comparison_id: Slug
    tool_id: Slug
    verdict: Verdict
    voter_id: str
    """A keyed hash of the voter's id; never the token."""
    at: datetime
    origin: Origin = Origin()


class VoteRetracted(msgspec.Struct, frozen=True, tag_field="type", tag="vote.retracted/1", forbid_unknown_fields=True):
    event_id: str
    comparison_id: Slug
    tool_id: Slug
    voter_id: str
    at: datetime
    origin: Origin = Origin()


class VoterVoided(msgspec.Struct, frozen=True, tag_field="type", tag="voter.voided/1", forbid_unknown_fields=True):
    """Moderation: every ballot of this voter stops counting, in every comparison, now and later."""

    event_id: str
    voter_id: str
    reason: str
    at: datetime


class VoterForgotten(
    msgspec.Struct, frozen=True, tag_field="type", tag="voter.forgotten/1", forbid_unknown_fields=True
):
    """Erasure asked by the voter (``DELETE /v1/voters/me``): every ballot of this voter stops counting and loses
    its verdict, in every comparison, as a void does (docs/design.md, "What is kept about a voter")."""

    event_id: str
    voter_id: str
    """The keyed hash of the voter's id, as in their casts; never the token."""
    at: datetime


class VoteCastV0(msgspec.Struct, frozen=True, tag_field="type", tag="vote.cast/0", forbid_unknown_fields=True):
    """Retired: the first schema of a cast (a boolean for the verdict, no origin). Upgraded on read."""

    event_id: str
    comparison_id: Slug
    tool_id: Slug
    ship: bool
    voter_id: str
    cast_at: datetime


VoteEvent = VoteCast | VoteRetracted
VoterEvent = VoterVoided | VoterForgotten
"""Events about a voter rather than one ballot: stored on the moderation subject, folded alike (fold.py)."""
Event = VoteCast | VoteRetracted | VoterVoided | VoterForgotten
"""Every event a current reader understands, after upgrading."""

StoredEvent = VoteCast | VoteRetracted | VoterVoided | VoterForgotten | VoteCastV0
"""Every version that may be found in the stream (current and retired)."""

# One encoder and one decoder, built once: constructing them per message costs more than the work itself.
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(StoredEvent)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def upgrade(event: StoredEvent) -> Event:
    """Turn a retired schema version into the current one (identity for current versions)."""
    if isinstance(event, VoteCastV0):
        return VoteCast(
            event_id=event.event_id,
            comparison_id=event.comparison_id,
            tool_id=event.tool_id,
            verdict="ship" if event.ship else "skip",
            voter_id=event.voter_id,
            at=event.cast_at,
        )
    return event


def decode_event(data: bytes) -> Event:
    """Decode and upgrade; raises msgspec.DecodeError (a ValidationError for a wrong shape) on bad data."""
    return upgrade(_decoder.decode(data))
