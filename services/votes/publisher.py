"""Appending events to the VOTES stream, and what the votes service may then say: stored, not stored, or unknown.

Every publish carries a ``Nats-Msg-Id`` the service chose (the event id, or for a request under an Idempotency-Key
the id of that key, ballot_box.py): JetStream stores one message id once within its duplicate window, so a publish
can always be made again, and a second one is answered ``duplicate`` when the first was stored. Three outcomes:

- stored: JetStream acknowledged it (``publish`` returns whether it held it already);
- ``StreamUnavailable``: surely not stored by this call. Not connected, so never sent (nor queued: a connection
  that does not drain is refused the same way), JetStream's "no responders" (no stream takes the subject), or an
  error from JetStream for every send;
- ``OutcomeUnknown``: sent, and no answer before the deadline (NATS slow or frozen, or the connection lost after
  the publish was written). The caller must not say "not stored": it may be, or may still be. Before giving up,
  the publisher settles what it can: when its connection comes back within the deadline, every publish still
  waiting is sent again under its message id, and the first answer to either send tells.

Each publish has a reply subject under one inbox of the publisher's, subscribed once (``<inbox>.*``), and waits on
a future its acknowledgement resolves: what ``js.publish`` does, without a task, a ``wait_for`` and a random token
per vote. One timer keeps every deadline (publishes wait equally long: the oldest is always the first due). The
publisher has a nats-py connection of its own (``start``, through services/shared/jetstream.py ``connect``, with
TLS and credentials as every connection has): it must hear of that connection's reconnection to settle the
publishes in flight, and its acks do not queue behind the catalogue watch's messages.
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

from contracts.events import VoteEvent, VoterForgotten, encode_event
from contracts.subjects import MODERATION_SUBJECT, votes_subject
from services.shared.config import NatsSettings
from services.shared.jetstream import PENDING_SIZE, connect

log = logging.getLogger(__name__)

_NO_RESPONDERS = "503"
_HEADROOM = 4096
"""Bytes kept free in nats-py's pending buffer: a publish that would fill it is refused instead of waiting."""


class StreamUnavailable(Exception):
    """The event was surely not stored by this publish (never sent, or refused): safe to answer 503."""


class OutcomeUnknown(Exception):
    """The event was sent and no answer came in time: it may be stored, or be stored later."""


class _Ack(msgspec.Struct):
    """JetStream's answer to a publish: the stored position, or an error (``{"error": {"code", "description"}}``)."""

    seq: int = 0
    duplicate: bool = False
    error: dict[str, object] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class _Publish:
    """One event on its way: each send of it (the first, and one after each reconnection) has a token of its own."""

    __slots__ = ("future", "headers", "payload", "refused", "subject", "tokens")

    def __init__(self, subject: str, payload: bytes, msg_id: str, future: asyncio.Future[_Ack]) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = {"Nats-Msg-Id": msg_id}
        self.future = future
        self.tokens: list[str] = []
        """One a send."""
        self.refused: list[str] = []
        """Why each send that was answered with a refusal was refused."""


class VotePublisher:
    def __init__(self, timeout_s: float, latency: Callable[[float], None] | None = None) -> None:
        self._nc: NATS | None = None
        self._timeout_s = timeout_s
        self._latency = latency
        """Observes each publish until acked or failed (services/votes/metrics.py)."""
        self._inbox = ""
        self._tokens = itertools.count()
        self._waiting: dict[str, _Publish] = {}
        """Each send's token, and the publish it is a send of."""
        self._in_flight: set[_Publish] = set()
        self._deadlines: deque[tuple[float, _Publish]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, nats_settings: NatsSettings, name: str) -> None:
        """Connect (within 30 s, as every service does) and subscribe to the publisher's inbox."""
        nc = await connect(nats_settings, name, reconnected_cb=self._reconnected)
        self._inbox = nc.new_inbox() + "."
        # The acks in flight are bounded by the requests in flight, not by these.
        await nc.subscribe(self._inbox + "*", cb=self._on_reply, pending_msgs_limit=1_000_000)
        self._nc = nc

    async def close(self) -> None:
        """Wait for the publishes in flight (each until answered or due), then close the connection."""
        await asyncio.gather(*(entry.future for entry in self._in_flight), return_exceptions=True)
        if self._nc is not None:
            await self._nc.drain()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def publish(self, event: VoteEvent, msg_id: str) -> bool:
        """Store the event under ``msg_id``; True when JetStream already held it (a retry inside the duplicate
        window). ``StreamUnavailable`` when it surely was not stored, ``OutcomeUnknown`` when that is not known."""
        started = time.perf_counter()
        try:
            ack = await self._publish(votes_subject(event.comparison_id), encode_event(event), msg_id)
        finally:
            if self._latency is not None:
                self._latency(time.perf_counter() - started)
        return ack.duplicate

    async def publish_forget(self, event: VoterForgotten) -> None:
        """Store a voter's forget on the moderation subject (it applies to every comparison), under its event id;
        the same outcomes as ``publish``."""
        await self._publish(MODERATION_SUBJECT, encode_event(event), event.event_id)

    async def _publish(self, subject: str, payload: bytes, msg_id: str) -> _Ack:
        nc = self._nc
        # A disconnected client would queue the publish and send it after reconnecting; refuse at once instead.
        if nc is None or not nc.is_connected:
            raise StreamUnavailable("the vote stream is not reachable")
        if nc.pending_data_size + len(payload) + _HEADROOM > PENDING_SIZE:
            # nats-py would wait, without a deadline, for room in its buffer: NATS is not taking what was sent.
            raise StreamUnavailable("the vote stream is not taking votes (the connection to NATS does not drain)")
        loop = asyncio.get_running_loop()
        entry = _Publish(subject, payload, msg_id, loop.create_future())
        try:
            await self._send(nc, entry)
        except (nats.errors.Error, OSError) as exc:  # refused before anything was queued: never sent
            raise StreamUnavailable(f"the vote stream did not take the vote: {type(exc).__name__}") from exc
        self._in_flight.add(entry)
        self._deadlines.append((loop.time() + self._timeout_s, entry))
        if self._timer is None:
            self._timer = loop.call_at(self._deadlines[0][0], self._expire)
        try:
            return await entry.future
        finally:
            self._in_flight.discard(entry)
            for token in entry.tokens:
                self._waiting.pop(token, None)

    async def _send(self, nc: NATS, entry: _Publish) -> None:
        token = str(next(self._tokens))
        self._waiting[token] = entry
        try:
            await nc.publish(entry.subject, entry.payload, reply=self._inbox + token, headers=entry.headers)
        except BaseException:
            del self._waiting[token]
            raise
        entry.tokens.append(token)

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._inbox) :], None)
        if entry is None or entry.future.done():
            return  # answered already (by another send of it), or due
        status = msg.headers.get("Status") if msg.headers else None
        if not msg.data and status == _NO_RESPONDERS:
            self._refused(entry, "no stream takes its subject (no responders)")
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:
            self._refused(entry, f"unreadable acknowledgement: {exc}")
            return
        if ack.error is not None:
            self._refused(entry, str(ack.error.get("description", ack.error)))
            return
        entry.future.set_result(ack)

    @staticmethod
    def _refused(entry: _Publish, reason: str) -> None:
        # Not stored by this send. Only when every send was refused is the event surely not stored: one that was
        # not answered may still be.
        entry.refused.append(reason)
        if len(entry.refused) == len(entry.tokens):
            entry.future.set_exception(StreamUnavailable(f"the vote stream refused the vote: {reason}"))

    async def _reconnected(self) -> None:
        """Send every publish still waiting again, under its message id: its first send may have been lost with the
        connection, and JetStream answers ``duplicate`` for one it stored."""
        nc = self._nc
        if nc is None:
            return
        for entry in list(self._in_flight):
            if entry.future.done():
                continue
            try:
                await self._send(nc, entry)
            except (nats.errors.Error, OSError) as exc:
                log.warning("a vote publish was not sent again after reconnecting: %r", exc)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, entry = deadlines.popleft()
            if not entry.future.done():
                entry.future.set_exception(
                    OutcomeUnknown(f"no answer from the vote stream within {self._timeout_s:g} s")
                )
        while deadlines and deadlines[0][1].future.done():
            deadlines.popleft()  # answered already: no timer for it
        if deadlines:
            self._timer = loop.call_at(deadlines[0][0], self._expire)
