"""Admitting a request: its rate limits, its idempotency record and the voter's current ballot, in one round trip.

A vote's claim also names the voter's forget marker (``forgotten_key``), which refuses every vote of a voter who
asked to be forgotten (``DELETE /v1/voters/me``, whose claim sets it) in the same round trip.

``admission.lua`` does all three atomically in Redis, so that two copies of the service racing on the same key see
one another, for every request of one event-loop turn in one script call (redis_batch.py gathers them): the hot
path costs one round trip, shared. While Redis is unreachable the limits are counted per process
(``LocalLimiter``) and the rest is skipped: JetStream's Nats-Msg-Id still stores a retried vote once, and a
repeated verdict changes no tally.
"""

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from services.votes.limits import Limit, LimitState, LocalLimiter
from services.votes.redis_batch import RedisBatch
from services.votes.redis_link import RedisLink

_SCRIPT = (Path(__file__).parent / "admission.lua").read_text()
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[list[Any]]).decode
# Requests in one script call at most: ~5 µs of Redis each, so that one call holds Redis a few milliseconds at most.
MAX_BATCH = 500


class Outcome(StrEnum):
    FORGOTTEN = "forgotten"
    """The voter asked to be forgotten: their token votes no more; nothing was counted or remembered."""
    LIMITED = "limited"
    """A rate limit refused the request; nothing was counted or remembered."""
    REPLAY = "replay"
    """The Idempotency-Key was used before with this very request: answer as the first time."""
    CONFLICT = "conflict"
    """The Idempotency-Key was used before with another request."""
    UNCHANGED = "unchanged"
    """The voter's ballot already says this."""
    PROCEED = "proceed"
    """Publish the event (the ballot and the idempotency record are already written)."""


class IdempotencyRecord(NamedTuple):
    """What the first request under an Idempotency-Key got; kept as ``hash|status|event_id|at``."""

    request_hash: str
    status: int
    event_id: str = ""
    at: datetime | None = None

    def encode(self) -> str:
        return f"{self.request_hash}|{self.status}|{self.event_id}|{self.at.isoformat() if self.at else ''}"

    @classmethod
    def decode(cls, text: str) -> "IdempotencyRecord":
        request_hash, status, event_id, at = text.split("|")
        return cls(request_hash, int(status), event_id, datetime.fromisoformat(at) if at else None)


class Claim(msgspec.Struct, frozen=True):
    """What one request asks of the gate (a Struct: built for every vote, ten times faster than a dataclass)."""

    limits: Sequence[tuple[Limit, str]] = ()
    """Each limit that applies, with the subject it counts (a voter hash, an address hash, a comparison)."""
    record_key: str | None = None
    record: IdempotencyRecord | None = None
    """Written under ``record_key`` when the request proceeds."""
    ballot_key: str | None = None
    ballot: str | None = None
    """The voter's ballot after this request ("ship", "skip", or "none" once retracted)."""
    forget_key: str | None = None
    """The voter's forget marker: a claim naming it is refused when it is set (``Outcome.FORGOTTEN``) ..."""
    forgets: bool = False
    """... unless the claim is the forget itself, which sets it once its limits let it through."""


class Admission(msgspec.Struct, frozen=True):
    outcome: Outcome
    states: list[LimitState] = msgspec.field(default_factory=list)
    replay: IdempotencyRecord | None = None
    shared: bool = True
    """Decided by Redis (limits shared by every copy), not by this process alone."""


def limit_key(limit: Limit, subject: str) -> str:
    # The rate is part of the key: state kept under another rate would otherwise refuse requests after a change.
    return f"shipskip:rl:{limit.name}:{limit.interval_us}:{limit.burst}:{subject}"


def record_key(message_id: str) -> str:
    return f"shipskip:idem:{message_id}"


def ballot_key(voter_id: str, comparison_id: str, tool_id: str) -> str:
    return f"shipskip:ballot:{voter_id}:{comparison_id}:{tool_id}"


def forgotten_key(voter_id: str) -> str:
    return f"shipskip:forgotten:{voter_id}"


class Gate:
    def __init__(self, link: RedisLink, *, record_ttl_s: int, ballot_ttl_s: int, forgotten_ttl_s: int) -> None:
        self._link = link
        self._script = link.client.register_script(_SCRIPT)
        self._batch: RedisBatch[Claim, list[Any]] = RedisBatch(self._send, max_items=MAX_BATCH)
        link.on_close(self._batch.close)
        self._record_ttl_s = record_ttl_s
        self._ballot_ttl_s = ballot_ttl_s
        self._forgotten_ttl_s = forgotten_ttl_s
        self._local = LocalLimiter()
        # Ballots this process accepted while Redis was unreachable: what Redis remembers for them may be stale
        # (a partition keeps it), so they are forgotten before Redis is used again.
        self._offline_ballots: set[str] = set()
        link.on_recovery(self._forget_offline_ballots)

    async def admit(self, claim: Claim) -> Admission:
        if not claim.limits and claim.record_key is None and claim.ballot_key is None and claim.forget_key is None:
            return Admission(Outcome.PROCEED)
        batch = self._batch
        reply = await self._link.run(lambda _: batch.submit(claim))
        if reply is None:
            return self._admit_locally(claim)
        return self._parse(claim, reply)

    async def _send(self, claims: list[Claim]) -> list[list[Any] | Exception]:
        """One script call for every claim of one event-loop turn: their replies, an error for a claim that failed."""
        keys: list[str] = []
        requests: list[list[Any]] = []
        for claim in claims:
            if claim.forget_key is not None:
                keys.append(claim.forget_key)
            keys += [limit_key(limit, subject) for limit, subject in claim.limits]
            request: list[Any] = [
                len(claim.limits),
                int(claim.record_key is not None),
                int(claim.ballot_key is not None),
                0 if claim.forget_key is None else 2 if claim.forgets else 1,
            ]
            if claim.record_key is not None:
                keys.append(claim.record_key)
            if claim.ballot_key is not None:
                keys.append(claim.ballot_key)
            for limit, _ in claim.limits:
                request += [limit.interval_us, limit.burst]
            record = claim.record
            request += [record.request_hash if record else "", record.encode() if record else "", claim.ballot or ""]
            requests.append(request)
        args: list[int | bytes] = [self._record_ttl_s, self._ballot_ttl_s, self._forgotten_ttl_s, _encode(requests)]
        client = self._link.client
        try:
            reply: bytes = await client.evalsha(self._script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed: the Script object loads it and calls again
            reply = await self._script(keys=keys, args=args, client=client)
        return [ResponseError(one[1]) if one[0] == "error" else one for one in _decode(reply)]

    def _admit_locally(self, claim: Claim) -> Admission:
        states = self._local.check(claim.limits)
        refused = any(state.refused for state in states)
        if claim.ballot_key is not None and not refused:
            self._offline_ballots.add(claim.ballot_key)
        return Admission(Outcome.LIMITED if refused else Outcome.PROCEED, states, shared=False)

    def _parse(self, claim: Claim, reply: list[Any]) -> Admission:
        outcome = Outcome(reply[0])
        if outcome is Outcome.FORGOTTEN:
            return Admission(outcome)  # refused before any limit was looked at
        numbers = [int(value) for value in reply[2:]]
        states = [
            LimitState(limit, numbers[3 * i], numbers[3 * i + 1], numbers[3 * i + 2])
            for i, (limit, _) in enumerate(claim.limits)
        ]
        replay = IdempotencyRecord.decode(reply[1]) if outcome is Outcome.REPLAY else None
        return Admission(outcome, states, replay)

    async def _forget_offline_ballots(self, client: Redis) -> None:
        keys = list(self._offline_ballots)
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        self._offline_ballots.difference_update(keys)

    async def forget_ballot(self, key: str) -> None:
        """After a failed publish: the remembered ballot may now be wrong, and no ballot is always safe."""
        await self._link.run(lambda client: client.delete(key))
