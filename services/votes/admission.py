"""Admitting a request: its rate limits, its idempotency record and the voter's current ballot, in one round trip.

``admission.lua`` does all three atomically in Redis, so the hot path costs one round trip (shared with the other
admissions of the same event-loop turn: redis_batch.py), and two copies of the service racing on the same key see
one another. A claim with no limit and no Idempotency-Key (limits off) has
only the ballot to keep, which one native command does (``Gate._swap_ballot``). While Redis is unreachable the
limits are counted per process (``LocalLimiter``) and the rest is skipped: JetStream's Nats-Msg-Id still stores a
retried vote once, and a repeated verdict changes no tally.
"""

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis

from services.votes.limits import Limit, LimitState, LocalLimiter
from services.votes.redis_link import RedisLink

_SCRIPT = (Path(__file__).parent / "admission.lua").read_text()


class Outcome(StrEnum):
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


class Gate:
    def __init__(self, link: RedisLink, *, record_ttl_s: int, ballot_ttl_s: int) -> None:
        self._link = link
        self._script = link.client.register_script(_SCRIPT)
        self._record_ttl_s = record_ttl_s
        self._ballot_ttl_s = ballot_ttl_s
        self._local = LocalLimiter()
        # Ballots this process accepted while Redis was unreachable: what Redis remembers for them may be stale
        # (a partition keeps it), so they are forgotten before Redis is used again.
        self._offline_ballots: set[str] = set()
        link.on_recovery(self._forget_offline_ballots)

    async def admit(self, claim: Claim) -> Admission:
        if not claim.limits and claim.record_key is None:
            if claim.ballot_key is None:
                return Admission(Outcome.PROCEED)
            return await self._swap_ballot(claim, claim.ballot_key)
        keys = [limit_key(limit, subject) for limit, subject in claim.limits]
        if claim.record_key is not None:
            keys.append(claim.record_key)
        if claim.ballot_key is not None:
            keys.append(claim.ballot_key)
        args: list[str | int] = [
            len(claim.limits),
            int(claim.record_key is not None),
            int(claim.ballot_key is not None),
        ]
        for limit, _ in claim.limits:
            args += [limit.interval_us, limit.burst]
        args += [
            claim.record.request_hash if claim.record else "",
            claim.record.encode() if claim.record else "",
            self._record_ttl_s,
            claim.ballot or "",
            self._ballot_ttl_s,
        ]

        batch = self._link.batch
        reply = await self._link.run(lambda _: batch.run_script(self._script, keys, args))
        if reply is None:
            return self._admit_locally(claim)
        return self._parse(claim, reply)

    async def _swap_ballot(self, claim: Claim, key: str) -> Admission:
        """The ballot alone (no limit applies, no Idempotency-Key): what the script's last step does, as one native
        ``SET key ballot EX ttl GET`` (Redis 6.2 on). No script call, no TIME, one command instead of two."""
        batch = self._link.batch
        ballot = claim.ballot or ""
        # A list of one reply: a key that held nothing reads None, which ``run`` also answers while Redis is down.
        reply = await self._link.run(
            lambda _: batch.run(lambda pipe: pipe.set(key, ballot, ex=self._ballot_ttl_s, get=True))
        )
        if reply is None:
            return self._admit_locally(claim)
        previous = reply[0]
        # Written again even when unchanged: as the script's EXPIRE, that keeps the ballot remembered as long.
        unchanged = previous is not None and previous.decode() == ballot
        return Admission(Outcome.UNCHANGED if unchanged else Outcome.PROCEED)

    def _admit_locally(self, claim: Claim) -> Admission:
        states = self._local.check(claim.limits)
        refused = any(state.refused for state in states)
        if claim.ballot_key is not None and not refused:
            self._offline_ballots.add(claim.ballot_key)
        return Admission(Outcome.LIMITED if refused else Outcome.PROCEED, states, shared=False)

    def _parse(self, claim: Claim, reply: list[Any]) -> Admission:
        outcome = Outcome(reply[0].decode())
        numbers = [int(value) for value in reply[2:]]
        states = [
            LimitState(limit, numbers[3 * i], numbers[3 * i + 1], numbers[3 * i + 2])
            for i, (limit, _) in enumerate(claim.limits)
        ]
        replay = IdempotencyRecord.decode(reply[1].decode()) if outcome is Outcome.REPLAY else None
        return Admission(outcome, states, replay)

    async def _forget_offline_ballots(self, client: Redis) -> None:
        keys = list(self._offline_ballots)
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        self._offline_ballots.difference_update(keys)

    async def forget_ballot(self, key: str) -> None:
        """After a failed publish: the remembered ballot may now be wrong, and no ballot is always safe."""
        await self._link.run(lambda client: client.delete(key))
