"""Appending events to the VOTES stream: a 202 is only answered after JetStream acknowledged the publish.

Each publish carries a reply subject under one inbox of this process's, subscribed once, and waits on a future that
the acknowledgement resolves: what ``js.publish`` does, without its costs per vote (a task for ``wait_for``, random
bytes for the token, ``json.loads`` and a dataclass for the ack). The deadline of every publish in flight is kept by
one timer: publishes wait equally long, so the oldest is always the first due.

The publishes and acks travel on the publisher's own connection (nats_link.py) where the NATS URL is plain
``nats://``; otherwise (TLS, websockets) on nats-py's connection, with an inbox subscription of its own.
"""

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from contracts.events import VoteEvent, encode_event
from contracts.subjects import votes_subject
from services.votes.nats_link import LinkDown, LinkUnsupported, NatsLink, parse_servers

log = logging.getLogger(__name__)

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
    def __init__(self, nc: NATS, timeout_s: float, latency: Callable[[float], None] | None = None) -> None:
        self._nc = nc
        self._link: NatsLink | None = None
        self._timeout_s = timeout_s
        self._latency = latency
        """Observes each publish until acked or failed (services/votes/metrics.py)."""
        self._inbox: str | None = None
        self._subscribing: asyncio.Task[str] | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[_Ack]] = {}
        self._deadlines: deque[tuple[float, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, nats_url: str, name: str) -> None:
        """Publish on a connection of its own to ``nats_url`` where it speaks that URL, else on nats-py's."""
        try:
            link = NatsLink(parse_servers(nats_url), name, self._resolve, self._fail_in_flight)
            await link.start()
        except LinkUnsupported as exc:
            log.info("vote publishes go through nats-py's connection: %s", exc)
            return
        self._link = link

    async def close(self) -> None:
        """Wait for the publishes in flight (each until acked or due), then close the publisher's connection."""
        await asyncio.gather(*self._waiting.values(), return_exceptions=True)
        if self._link is not None:
            self._link.close()

    @property
    def connected(self) -> bool:
        return self._link.connected if self._link is not None else self._nc.is_connected

    async def publish(self, event: VoteEvent, msg_id: str | None) -> bool:
        """Store the event; True when JetStream already held it (a retry inside the duplicate window).

        ``msg_id``, JetStream's dedup key, is given for what may be published again (a request under an
        Idempotency-Key); without one the event is stored as it comes, and JetStream keeps no dedup entry for it.
        """
        # A disconnected client would queue the publish and wait out the timeout; refuse at once instead.
        if not self.connected:
            raise StreamUnavailable("the vote stream is not reachable")
        started = time.perf_counter()
        try:
            ack = await self._publish(votes_subject(event.comparison_id), encode_event(event), msg_id)
        except (nats.errors.Error, TimeoutError, OSError, LinkDown) as exc:
            raise StreamUnavailable(f"the vote stream did not acknowledge the vote: {type(exc).__name__}") from exc
        finally:
            if self._latency is not None:
                self._latency(time.perf_counter() - started)
        if ack.error is not None:
            raise StreamUnavailable(f"the vote stream refused the vote: {ack.error.get('description', ack.error)}")
        return ack.duplicate

    async def _publish(self, subject: str, payload: bytes, msg_id: str | None) -> _Ack:
        link = self._link
        inbox = "" if link is not None else self._inbox or await self._subscribed()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Ack] = loop.create_future()
        self._waiting[token] = future
        self._deadlines.append((loop.time() + self._timeout_s, token))
        if self._timer is None:
            self._timer = loop.call_at(self._deadlines[0][0], self._expire)
        try:
            if link is not None:
                link.publish(subject, token, msg_id, payload)
            else:
                headers = {"Nats-Msg-Id": msg_id} if msg_id is not None else None
                await self._nc.publish(subject, payload, reply=inbox + token, headers=headers)
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
        status = msg.headers.get("Status") if msg.headers else None
        self._resolve(msg.subject.rpartition(".")[2], msg.data, status)

    def _resolve(self, token: str, data: bytes, status: str | None) -> None:
        """A reply on the inbox, from either connection: the ack (or refusal) of the publish ``token``."""
        future = self._waiting.get(token)
        if future is None or future.done():
            return  # timed out already, or its caller gave up
        if not data and status == _NO_RESPONDERS:
            future.set_exception(nats.errors.NoRespondersError())
            return
        try:
            future.set_result(_decode_ack(data))
        except msgspec.DecodeError as exc:
            future.set_exception(nats.errors.Error(f"unreadable acknowledgement: {exc}"))

    def _fail_in_flight(self) -> None:
        # Their acks went with the connection: each caller answers 503 now rather than at its deadline.
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkDown("the connection to NATS was lost before the acknowledgement"))

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
