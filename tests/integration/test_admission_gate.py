"""The admission gate (services/votes/admission.py) against real Redis servers: the ways a claim keeps a ballot.

A claim with the ballot alone (limits off, no Idempotency-Key), with a rate limit, or with a key: ``admission.lua``
must decide them alike and leave Redis alike, on every kind of Redis the service may be given: the suite's plain
one, one asking for a password (or an ACL user's), one over TLS.
"""

import secrets

import pytest

from services.votes.admission import Claim, Gate, IdempotencyRecord, Outcome, ballot_key, record_key
from services.votes.limits import Limit
from services.votes.redis_link import RedisLink
from tests.redis_targets import RedisTarget

BALLOT_TTL_S = 600
# Verdicts in turn, and what each must be told: a repeat changes nothing, a change or a retraction proceeds.
STEPS = [
    ("ship", Outcome.PROCEED),
    ("ship", Outcome.UNCHANGED),
    ("skip", Outcome.PROCEED),
    ("none", Outcome.PROCEED),
    ("none", Outcome.UNCHANGED),
    ("ship", Outcome.PROCEED),
]
LOOSE = Limit("voter", 1000, 1, 1000)  # applies, so the script runs, but never refuses here


def _claim(way: str, key: str, ballot: str) -> Claim:
    if way == "ballot alone":
        return Claim(ballot_key=key, ballot=ballot)
    if way == "with a limit":
        return Claim(limits=[(LOOSE, secrets.token_hex(4))], ballot_key=key, ballot=ballot)
    # A new Idempotency-Key each time: every request is a first one.
    record = IdempotencyRecord(secrets.token_hex(8), 202, "event", None)
    return Claim(record_key=record_key(secrets.token_hex(8)), record=record, ballot_key=key, ballot=ballot)


@pytest.mark.parametrize("way", ["ballot alone", "with a limit", "with a key"])
async def test_each_way_tells_a_repeat_from_a_change_and_keeps_the_ballot(redis_target: RedisTarget, way: str) -> None:
    link = redis_target.link(timeout_s=2.0)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=BALLOT_TTL_S, forgotten_ttl_s=BALLOT_TTL_S)
    key = ballot_key(secrets.token_hex(8), "a-vs-b", "a")
    try:
        for ballot, expected in STEPS:
            admission = await gate.admit(_claim(way, key, ballot))
            assert (ballot, admission.outcome, admission.shared) == (ballot, expected, True)
            assert await link.client.get(key) == ballot.encode()
            # Remembered for the full time again, a repeat included.
            assert BALLOT_TTL_S - 5 <= await link.client.ttl(key) <= BALLOT_TTL_S
            await link.client.expire(key, BALLOT_TTL_S // 2)
    finally:
        await link.client.delete(key)
        await link.close()


async def test_the_ballot_alone_while_redis_is_unreachable_is_decided_by_the_process() -> None:
    link = RedisLink("redis://127.0.0.1:1/0", timeout_s=0.5, pool_size=2)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=BALLOT_TTL_S, forgotten_ttl_s=BALLOT_TTL_S)
    try:
        admission = await gate.admit(Claim(ballot_key="shipskip:ballot:v:a-vs-b:a", ballot="ship"))
    finally:
        await link.close()
    assert (admission.outcome, admission.shared) == (Outcome.PROCEED, False)
    assert not link.up
