"""Pulling a consumer's deliveries in batches: the live projector's durable consumer, and a replay's ephemeral one
(services/tally/rebuild/replay.py).

nats-py's ``PullSubscription.fetch`` takes each message of a batch through ``next_msg``, which creates a task, a
``wait_for`` timer and a uuid4 for every message: with the event-loop work they cause, about 15 % of the projector's
CPU under the ingest benchmark (``BENCH_PROFILE=1 BENCH_PROFILE_SERVICE=projector``), on the two cores the votes
service needs. Here a callback subscription on an inbox of our own collects what the server delivers, and a fetch
wakes once per burst of deliveries instead of once per message.

A fetch sends the same pull requests as nats-py's: first ``no_wait`` (what the stream holds now, ended by a 404 or
by a full batch), then, if that brought nothing, one that lingers until a message comes or it expires (a 408).
Each request has a reply subject of its own, so that the status ending it is told from a late one of an earlier
request. A lingering request may still deliver after its fetch returned with the first messages: those wait here
for the next fetch, and expire within the fetch timeout, as ``Projector._subscribe`` counts on.
"""

import asyncio
import json
from collections.abc import Callable
from itertools import count

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import Header, StatusCode

_ACK_PREFIX = "$JS.ACK."
_EXPIRY_MARGIN_S = 0.01
"""A lingering request expires this much before the fetch gives up, so that its 408 normally ends the fetch."""


class PullRefused(nats.errors.Error):
    """The server answered a pull request with an error status (a deleted consumer, too many waiting requests, ...)."""


class PullBatches:
    """Fetches batches from the durable consumer ``durable`` of ``stream`` over ``nc``; ``open`` first."""

    def __init__(self, nc: NATS, stream: str, durable: str) -> None:
        self._nc = nc
        self._request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._requests = count(1)
        self._subscription: Subscription | None = None
        self._delivered: list[Msg] = []
        """Deliveries not yet handed out, in the order they arrived (the consumer's order)."""
        self._ended: set[str] = set()
        """Reply subjects of requests the server has ended with a status."""
        self._refusal: str | None = None
        """The last error status of a request, until a fetch reports it."""
        self._changed = asyncio.Event()
        """Set whenever a delivery or a status arrives; a fetch waiting for either clears it first."""

    async def open(self) -> None:
        self._subscription = await self._nc.subscribe(
            self._inbox + ".*",
            cb=self._on_message,
            # The consumer's max_ack_pending and the batch size bound what is outstanding, not these.
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=512 * 1024 * 1024,
        )

    async def close(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            await subscription.unsubscribe()

    async def _on_message(self, msg: Msg) -> None:
        if msg.reply.startswith(_ACK_PREFIX):
            # A delivery: its reply subject is where it would be acked. Told apart without a header lookup, since
            # every stored vote has headers (its Nats-Msg-Id) and a status message has none of these.
            self._delivered.append(msg)
            self._changed.set()
            return
        status = msg.headers.get(Header.STATUS) if msg.headers else None
        if status is None:
            self._delivered.append(msg)
        elif status == StatusCode.CONTROL_MESSAGE:
            return  # heartbeats and flow control: none are asked for, and they carry no message
        else:
            self._ended.add(msg.subject)
            if status not in (StatusCode.NO_MESSAGES, StatusCode.REQUEST_TIMEOUT):
                description = msg.headers.get(Header.DESCRIPTION, "") if msg.headers else ""
                self._refusal = f"{status} {description}".strip()
        self._changed.set()

    async def fetch(self, batch: int, wait_s: float) -> list[Msg]:
        """Up to ``batch`` deliveries, as soon as there is at least one; TimeoutError when none came in ``wait_s``.

        Raises ``PullRefused`` when the server refused the requests and nothing was delivered.
        """
        assert self._subscription is not None, "open() first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        if len(self._delivered) < batch:
            request = await self._request({"batch": batch - len(self._delivered), "no_wait": True})
            await self._wait(lambda: len(self._delivered) >= batch or request in self._ended, deadline)
        if not self._delivered and self._refusal is None:
            expires = deadline - loop.time() - _EXPIRY_MARGIN_S
            if expires > 0:
                request = await self._request({"batch": batch, "expires": int(expires * 1e9)})
                await self._wait(lambda: bool(self._delivered) or request in self._ended, deadline)
        refusal, self._refusal = self._refusal, None
        if not self._delivered:
            if refusal is not None:
                raise PullRefused(f"pull request refused: {refusal}")
            raise TimeoutError(f"nothing delivered in {wait_s:.1f} s")
        taken = self._delivered[:batch]
        del self._delivered[:batch]
        return taken

    async def _request(self, request: dict[str, object]) -> str:
        reply = f"{self._inbox}.{next(self._requests)}"
        await self._nc.publish(self._request_subject, json.dumps(request).encode(), reply=reply)
        return reply

    async def _wait(self, done: Callable[[], bool], deadline: float) -> None:
        """Until ``done()`` or the deadline; the ended requests are forgotten after (each is waited on once)."""
        loop = asyncio.get_running_loop()
        try:
            while not done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return
        finally:
            self._ended.clear()
