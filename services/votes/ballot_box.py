"""From a valid vote request to its answer: rate limits, idempotent retries, unchanged ballots, publishing.

One Redis round trip (``Gate.admit``) decides everything before the publish; the publish itself is what makes
the vote count, so a 202 is only answered once JetStream acknowledged it. An answer never claims more than is
known: 503 ``stream_unavailable`` only when the vote surely is not stored, and 504 ``vote_outcome_unknown`` when
it may be (sent, and no answer in time; publisher.py). Both say: send the same request again with the same
Idempotency-Key, and it is stored once.
"""

import hashlib

import msgspec

from contracts.events import VoteCast, VoteEvent
from services.shared.http import ApiError
from services.votes.admission import (
    Admission,
    Claim,
    IdempotencyRecord,
    Outcome,
    ballot_key,
    forgotten_key,
    record_key,
)
from services.votes.context import VotesContext
from services.votes.limits import Limit
from services.votes.publisher import OutcomeUnknown, StreamUnavailable
from services.votes.ratelimit_headers import rate_limit_headers, rate_limited
from services.votes.replies import Reply, accepted, unchanged

BALLOT_MEMORY_S = 7 * 86400
"""How long a voter's last verdict is remembered; after that a repeat is published again (and changes nothing)."""

RETRACTED = "none"


class Submission(msgspec.Struct, frozen=True):
    event: VoteEvent
    idempotency_key: str | None
    request_hash: str
    """Of method, path and body: what makes a retry the same request."""
    address: str | None


def request_hash(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"%s\n%s\n%s" % (method.encode(), path.encode(), body)).hexdigest()


def message_id(voter_id: str, idempotency_key: str) -> str:
    """The JetStream dedup key of a request with an Idempotency-Key.

    Scoped to the voter, so two voters who happen to pick the same key never swallow each other's votes.
    """
    return hashlib.sha256(f"{voter_id}\x00{idempotency_key}".encode()).hexdigest()


def _subjects(context: VotesContext, submission: Submission) -> list[tuple[Limit, str]]:
    limits = context.settings.rate_limits
    event = submission.event
    subjects: list[tuple[Limit, str]] = []
    if limits.per_voter is not None:
        subjects.append((limits.per_voter, event.voter_id))
    if limits.per_address is not None and submission.address is not None:
        subjects.append((limits.per_address, context.hasher.address_bucket(submission.address)))
    if limits.per_comparison is not None:
        subjects.append((limits.per_comparison, event.comparison_id))
    return subjects


async def submit(context: VotesContext, submission: Submission) -> Reply:
    event = submission.event
    key = submission.idempotency_key
    # Every publish has a message id of ours, so that one whose outcome is unknown can be sent again and stored
    # once (publisher.py): the id of the Idempotency-Key, whose retries replay this request, else the event's.
    msg_id = message_id(event.voter_id, key) if key is not None else event.event_id
    ballot = ballot_key(event.voter_id, event.comparison_id, event.tool_id)
    claim = Claim(
        limits=_subjects(context, submission),
        record_key=record_key(msg_id) if key is not None else None,
        record=IdempotencyRecord(submission.request_hash, 202, event.event_id, event.at) if key is not None else None,
        ballot_key=ballot,
        ballot=event.verdict if isinstance(event, VoteCast) else RETRACTED,
        forget_key=forgotten_key(event.voter_id),
    )
    admission = await context.gate.admit(claim)
    headers = rate_limit_headers(admission.states)
    match admission.outcome:
        case Outcome.FORGOTTEN:
            raise voter_forgotten()
        case Outcome.LIMITED:
            raise rate_limited(admission.states)
        case Outcome.CONFLICT:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request (method, path or body); "
                "send a new key with a new request",
                headers=headers,
            )
        case Outcome.UNCHANGED:
            return unchanged(headers)
        case Outcome.REPLAY:
            assert admission.replay is not None
            if admission.replay.status == 200:
                return unchanged(headers)
            # Publish the first request's event again: JetStream stores it once (it may still be in flight, or
            # its publish may have failed), and the retry is only answered 202 once it is surely stored.
            replay = admission.replay
            event = msgspec.structs.replace(event, event_id=replay.event_id, at=replay.at or event.at)
    try:
        await context.publisher.publish(event, msg_id)
    except (StreamUnavailable, OutcomeUnknown) as exc:
        if admission.outcome is Outcome.PROCEED and admission.shared:
            # The ballot remembered for this voter may now be wrong (the vote may not be stored, or not yet);
            # none remembered is always safe: the next vote is published and folded as the stream says.
            await context.gate.forget_ballot(ballot)
        if isinstance(exc, StreamUnavailable) and not _tried_before(admission, key):
            raise ApiError(503, "stream_unavailable", str(exc), retry_after=1, headers=headers) from None
        raise ApiError(
            504,
            "vote_outcome_unknown",
            f"{exc}; the vote may or may not be stored: send the same request again with the same Idempotency-Key,"
            " and it is counted once",
            retry_after=1,
            headers=headers,
        ) from None
    return accepted(event.event_id, headers)


def voter_forgotten() -> ApiError:
    return ApiError(
        401,
        "voter_forgotten",
        "this voter asked to be forgotten (DELETE /v1/voters/me): the token votes no more; ask POST /v1/voters for a"
        " new one to vote again",
    )


def _tried_before(admission: Admission, key: str | None) -> bool:
    """Whether an earlier request under this Idempotency-Key may have stored the event, so that this publish not
    storing it does not mean it is not stored: a replay, or one Redis could not tell about (it was unreachable)."""
    return key is not None and (admission.outcome is Outcome.REPLAY or not admission.shared)


async def admit_new_voter(context: VotesContext, address: str | None) -> dict[str, str]:
    """The rate limit on voter tokens per client address; the RateLimit fields for the answer."""
    limit = context.settings.rate_limits.tokens_per_address
    if limit is None or address is None:
        return {}
    admission = await context.gate.admit(Claim(limits=[(limit, context.hasher.address_bucket(address))]))
    if admission.outcome is Outcome.LIMITED:
        raise rate_limited(admission.states)
    return rate_limit_headers(admission.states)
