"""Appending events to the VOTES stream: a 202 is only answered after JetStream acknowledged the publish."""

import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import APIError

from contracts.events import VoteEvent, encode_event
from contracts.subjects import votes_subject


class StreamUnavailable(Exception):
    """NATS or JetStream cannot take the event now; the client should retry (with the same Idempotency-Key)."""


class VotePublisher:
    def __init__(
        self, nc: NATS, js: JetStreamContext, timeout_s: float, latency: Callable[[float], None] | None = None
    ) -> None:
        self._nc = nc
        self._js = js
        self._timeout_s = timeout_s
        self._latency = latency
        """Observes each publish until acked or failed (services/votes/metrics.py)."""

    async def publish(self, event: VoteEvent, msg_id: str) -> bool:
        """Store the event; True when JetStream already held it (a retry inside the duplicate window)."""
        # A disconnected client would queue the publish and wait out the timeout; refuse at once instead.
        if not self._nc.is_connected:
            raise StreamUnavailable("the vote stream is not reachable")
        started = time.perf_counter()
        try:
            ack = await self._js.publish(
                votes_subject(event.comparison_id),
                encode_event(event),
                timeout=self._timeout_s,
                headers={"Nats-Msg-Id": msg_id},
            )
        except (nats.errors.Error, APIError, TimeoutError, OSError) as exc:
            raise StreamUnavailable(f"the vote stream did not acknowledge the vote: {type(exc).__name__}") from exc
        finally:
            if self._latency is not None:
                self._latency(time.perf_counter() - started)
        return bool(ack.duplicate)
