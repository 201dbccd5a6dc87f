"""Appending events to the VOTES stream: a 202 is only answered after JetStream acknowledged the publish.

Each publish carries a reply subject under one inbox of this process's, subscribed once, and waits on a future that
the acknowledgement resolves: what ``js.publish`` does, without its costs per vote (a task for ``wait_for``, random
bytes for the token, ``json.loads`` and a dataclass for the ack). The deadline of every publish in flight is kept by
one timer: publishes wait equally long, so the oldest is always the first due.
"""

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.events import VoteEvent, encode_event
from contracts.subjects import votes_subject

_NO_RESPONDERS = "503"


class StreamUnavailable(Exception):
    """NATS or JetStream cannot take the event now; the client should retry (with the same Idempotency-Key)."""


class _Ack(msgspec.Struct):
    """JetStream's answer to a publish: the stored position, or an error (``{"error": {"code", "description"}}``)."""

    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class VotePublisher:
    def __init__(
        self, nc: NATS, js: JetStreamContext, timeout_s: float, latency: Callable[[float], None] | None = None
    ) -> None:
        self._nc = nc  # ``js`` is not needed: the acknowledgements are read here (see the module's docstring)
        self._timeout_s = timeout_s
        self._latency = latency
        """Observes each publish until acked or failed (services/votes/metrics.py)."""
        self._inbox: str | None = None
        self._subscribing: asyncio.Task[str] | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[_Ack]] = {}
        self._deadlines: deque[tuple[float, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def publish(self, event: VoteEvent, msg_id: str) -> bool:
        """Store the event; True when JetStream already held it (a retry inside the duplicate window)."""
        # A disconnected client would queue the publish and wait out the timeout; refuse at once instead.
        if not self._nc.is_connected:
            raise StreamUnavailable("the vote stream is not reachable")
        started = time.perf_counter()
        try:
            ack = await self._publish(votes_subject(event.comparison_id), encode_event(event), msg_id)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            raise StreamUnavailable(f"the vote stream did not acknowledge the vote: {type(exc).__name__}") from exc
        finally:
            if self._latency is not None:
                self._latency(time.perf_counter() - started)
        if ack.error is not None:
            raise StreamUnavailable(f"the vote stream refused the vote: {ack.error.get('description', ack.error)}")
        return ack.duplicate

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> _Ack:
        inbox = self._inbox or await self._subscribed()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Ack] = loop.create_future()
        self._waiting[token] = future
        self._deadlines.append((loop.time() + self._timeout_s, token))
        if self._timer is None:
            self._timer = loop.call_at(self._deadlines[0][0], self._expire)
        try:
            await self._nc.publish(subject, payload, reply=inbox + token, headers={"Nats-Msg-Id": msg_id})
            return await future
        finally:
            self._waiting.pop(token, None)

    async def _subscribed(self) -> str:
        # Concurrent first publishes share one subscription; shielded, so one caller giving up does not end it.
        if self._subscribing is None:
            self._subscribing = asyncio.get_running_loop().create_task(self._subscribe())
        inbox = await asyncio.shield(self._subscribing)
        self._inbox = inbox
        return inbox

    async def _subscribe(self) -> str:
        prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(prefix + "*", cb=self._on_reply)
        return prefix

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject.rpartition(".")[2])
        if future is None or future.done():
            return  # timed out already, or its caller gave up
        if not msg.data and msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(nats.errors.NoRespondersError())
            return
        try:
            future.set_result(_decode_ack(msg.data))
        except msgspec.DecodeError as exc:
            future.set_exception(nats.errors.Error(f"unreadable acknowledgement: {exc}"))

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, token = deadlines.popleft()
            future = self._waiting.get(token)
            if future is not None and not future.done():
                future.set_exception(TimeoutError())
        while deadlines and deadlines[0][1] not in self._waiting:
            deadlines.popleft()  # answered already: no timer for it
        if deadlines:
            self._timer = loop.call_at(deadlines[0][0], self._expire)
