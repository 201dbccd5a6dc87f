"""Moderation: voiding a voter appends an event; the projector removes their ballots from every tally."""

import re
from datetime import UTC, datetime

from nats.js import JetStreamContext

from contracts.events import VoterVoided, encode_event
from contracts.subjects import MODERATION_SUBJECT
from services.shared.event_ids import new_event_id

VOTER_ID = re.compile(r"[0-9a-f]{32}")
"""Voter ids in events are 32 hex characters (a keyed hash); operators find them in reports, never a token."""


class InvalidVoid(ValueError):
    pass


async def void_voter(js: JetStreamContext, voter_id: str, reason: str) -> VoterVoided:
    if not VOTER_ID.fullmatch(voter_id):
        raise InvalidVoid(f"{voter_id[:80]!r} is not a voter id (32 hex characters, as in events and reports)")
    reason = reason.strip()
    if not 1 <= len(reason) <= 500:
        raise InvalidVoid("give a reason of 1 to 500 characters")
    event = VoterVoided(event_id=new_event_id(), voter_id=voter_id, reason=reason, at=datetime.now(UTC))
    await js.publish(MODERATION_SUBJECT, encode_event(event), headers={"Nats-Msg-Id": event.event_id}, timeout=5)
    return event
