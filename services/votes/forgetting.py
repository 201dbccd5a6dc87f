"""``DELETE /v1/voters/me``: a voter asks to be forgotten.

In order, and answered 202 only once all of it is done:
1. the admission gate counts the request against the voter's and the address's limits and sets the voter's forget
   marker in Redis (``shipskip:forgotten:<voter id>``, kept as long as a token lives): from then on every vote of
   the token is refused 401 ``voter_forgotten`` in the same round trip that admits votes (admission.lua);
2. a ``voter.forgotten/1`` event is stored on the moderation subject: the projector takes every ballot of the voter
   out of the tallies and their verdicts out of the ballots, as a rebuild does (services/tally/fold.py);
3. the verdicts Redis remembers for the voter in the comparisons open now (``shipskip:ballot:...``, to answer a
   repeat "unchanged") are deleted; those of comparisons closed since expire within ``BALLOT_MEMORY_S``.

Without Redis the marker cannot be set, so nothing is stored and the answer is 503 (the token would go on voting).
Every call stores an event of its own: a second forget changes nothing (or erases a vote that raced the first),
and a retry after a 503 or 504 is always safe.
"""

import logging
from datetime import UTC, datetime
from functools import partial

from redis.asyncio import Redis

from contracts.events import VoterForgotten
from services.shared.event_ids import new_event_id
from services.shared.http import ApiError
from services.votes.admission import Claim, Outcome, ballot_key, forgotten_key
from services.votes.context import VotesContext
from services.votes.limits import Limit
from services.votes.publisher import OutcomeUnknown, StreamUnavailable
from services.votes.ratelimit_headers import rate_limit_headers, rate_limited

log = logging.getLogger(__name__)

_PAGE = 500
"""Comparisons a step when the remembered verdicts are deleted: one DEL of at most 1,000 keys each."""


async def forget_voter(context: VotesContext, voter_id: str, address: str | None) -> tuple[str, dict[str, str]]:
    """The stored event's id and the answer's RateLimit fields, or an ApiError (429, 503, 504)."""
    limits = context.settings.rate_limits
    subjects: list[tuple[Limit, str]] = []
    if limits.per_voter is not None:
        subjects.append((limits.per_voter, voter_id))
    if limits.per_address is not None and address is not None:
        subjects.append((limits.per_address, context.hasher.address_bucket(address)))
    admission = await context.gate.admit(Claim(limits=subjects, forget_key=forgotten_key(voter_id), forgets=True))
    headers = rate_limit_headers(admission.states)
    if admission.outcome is Outcome.LIMITED:
        raise rate_limited(admission.states)
    if not admission.shared:
        raise ApiError(
            503,
            "forget_unavailable",
            "the service cannot stop this token from voting right now (its Redis is unreachable); nothing was"
            " stored: send the request again",
            retry_after=5,
            headers=headers,
        )
    event = VoterForgotten(event_id=new_event_id(), voter_id=voter_id, at=datetime.now(UTC))
    try:
        await context.publisher.publish_forget(event)
    except StreamUnavailable as exc:
        raise ApiError(
            503,
            "stream_unavailable",
            f"{exc}; the token votes no more, but its votes still count: send the request again",
            retry_after=1,
            headers=headers,
        ) from None
    except OutcomeUnknown as exc:
        raise ApiError(
            504,
            "forget_outcome_unknown",
            f"{exc}; the token votes no more, and the forget may or may not be stored: send the request again"
            " (a second forget changes nothing)",
            retry_after=1,
            headers=headers,
        ) from None
    await _drop_remembered_ballots(context, voter_id)
    return event.event_id, headers


async def _delete(client: Redis, keys: list[str]) -> int:
    deleted: int = await client.delete(*keys)
    return deleted


async def _drop_remembered_ballots(context: VotesContext, voter_id: str) -> None:
    """Best effort: a verdict left behind is never read again (the marker refuses the token first) and expires."""
    after: str | None = None
    while True:
        comparisons, more = context.catalog.page(after, _PAGE)
        keys = [ballot_key(voter_id, comparison.id, tool.id) for comparison, tools in comparisons for tool in tools]
        if keys and await context.redis.run(partial(_delete, keys=keys)) is None:
            log.warning("the remembered verdicts of a forgotten voter were not deleted (Redis unreachable)")
            return
        if not more or not comparisons:
            return
        after = comparisons[-1][0].id
