"""A replay's own NATS connection: a pull consumer's deliveries read straight off the socket.

A rebuild reads the whole stream, and in nats-py that reading was most of its reading process's CPU: a ``Msg``, a
header dict and an ordered-consumer check per message, each through a subscription queue and task
(docs/performance-journal.md). Here the replay asks an ephemeral pull consumer (no acks, kept in memory) for batches
over a connection of its own (services/shared/nats_wire.py), and each delivery is handed to ``on_delivery`` from
``data_received``: its sequences cut from the reply subject, its payload sliced out of the read buffer.

The consumer is made, asked about and deleted through nats-py (JetStream's API: a few calls a replay). What is
asked for is bounded by what the caller has room for (``ask``), so a replay that folds slower than the server sends
holds the server back, as flow control did. Deliveries come in the consumer's order; a consumer sequence that skips
one, a consumer deleted under it or a lost connection is ``trouble``: the caller makes a new session from the last
stream sequence it has.
"""

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from functools import partial

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.subjects import VOTES_STREAM
from services.shared.nats_wire import (
    LinkDown,
    Server,
    WireConnection,
    new_inbox,
    open_connection,
    status_description,
    status_of,
)

log = logging.getLogger(__name__)

EXPIRES_NS = 10_000_000_000
"""How long a pull request waits on the server for messages at the stream's end (then 408, and it is asked again)."""
MAX_REQUESTS = 4
"""Pull requests outstanding at most."""

OnDelivery = Callable[[int, int, int, str, bytes], None]
"""(stream sequence, consumer sequence, messages still pending, subject, payload) of each delivery."""


def delivery_sequences(reply: str) -> tuple[int, int, int]:
    """(stream sequence, consumer sequence, messages still pending) from a JetStream delivery's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`` from older servers;
    newer ones put domain and account hash before the stream and may add a token at the end (as nats-py reads it).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    if len(tokens) >= 11 and tokens[0] == "$JS":
        return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.ConsumerSeq]), int(tokens[Msg.Ack.NumPending])
    raise ValueError(f"not a JetStream delivery: reply subject {reply!r}")


class _PullConnection(WireConnection):
    """Deliveries (a message with a reply subject) and the ends of pull requests (status messages on the inbox)."""

    def __init__(self, server: Server, inbox: bytes, session: "PullSession") -> None:
        super().__init__(server, "shipskip-replay", inbox, session.connection_lost)
        self._session = session
        self._subjects: dict[bytes, str] = {}

    def message(self, parts: list[bytes], buffer: bytearray, start: int, headers: int, total: int) -> None:
        if len(parts) == (6 if headers else 5):  # op subject sid reply [header size] size: a delivery
            seq, consumer_seq, pending = delivery_sequences(parts[3].decode())
            subject = self._subjects.get(parts[1])
            if subject is None:
                subject = self._subjects[parts[1]] = parts[1].decode()
            self._session.delivered(seq, consumer_seq, pending, subject, bytes(buffer[start + headers : start + total]))
        elif parts[1].startswith(self._inbox):
            status = status_of(buffer, start, headers)
            description = status_description(buffer, start, headers)
            self._session.ended(parts[1][len(self._inbox) :], status, description)


class PullSession:
    """One ephemeral pull consumer of VOTES from a stream sequence on, read over a connection of its own."""

    def __init__(
        self,
        js: JetStreamContext,
        servers: list[Server],
        subjects: list[str],
        batch_size: int,
        on_delivery: OnDelivery,
        on_trouble: Callable[[str], None],
        room: Callable[[], int],
    ) -> None:
        """``room``: how many more messages the caller can take now (what is asked for stays within it)."""
        self._js = js
        self._servers = servers
        self._subjects = subjects
        self._batch_size = batch_size
        self._on_delivery = on_delivery
        self._on_trouble = on_trouble
        self._room = room
        self._inbox = new_inbox()
        self._tokens = itertools.count()
        self._requests: deque[list[int]] = deque()
        """[token, messages still to come] of each pull request outstanding, in the order the server serves them."""
        self._connection: WireConnection | None = None
        self._next_subject = b""
        self.consumer = ""
        self._consumer_seq = 0
        self._closed = False

    async def open(self, start_seq: int, timeout_s: float = 5.0) -> ConsumerInfo:
        """Make the consumer (from ``start_seq``, 1 for the whole stream) and connect; the consumer's first info."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            filter_subjects=self._subjects,
            inactive_threshold=60.0,  # an interrupted replay leaves nothing behind on the server
            mem_storage=True,
            num_replicas=1,
            **(
                {"deliver_policy": DeliverPolicy.ALL}
                if start_seq <= 1
                else {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_seq}
            ),
        )
        info = await self._js.add_consumer(VOTES_STREAM, config)
        self.consumer = info.name
        self._next_subject = b"$JS.API.CONSUMER.MSG.NEXT.%s.%s " % (VOTES_STREAM.encode(), info.name.encode())
        try:
            self._connection = await self._connect(timeout_s)
        except BaseException:
            await self._delete_consumer()
            raise
        return info

    async def _connect(self, timeout_s: float) -> WireConnection:
        """The first of the servers that answers (the nodes of a cluster); LinkDown when none does."""
        failures = []
        for server in self._servers:
            try:
                return await open_connection(server, partial(_PullConnection, server, self._inbox, self), timeout_s)
            except (OSError, TimeoutError, LinkDown) as exc:
                failures.append(f"{server.host}:{server.port}: {exc or type(exc).__name__}")
        raise LinkDown("no NATS server answered the replay: " + "; ".join(failures))

    async def info(self) -> ConsumerInfo:
        info: ConsumerInfo = await self._js.consumer_info(VOTES_STREAM, self.consumer)
        return info

    async def close(self) -> None:
        self._closed = True
        if self._connection is not None:
            self._connection.close()
        await self._delete_consumer()

    async def _delete_consumer(self) -> None:
        if self.consumer:
            with contextlib.suppress(NotFoundError, TimeoutError, OSError):
                await self._js.delete_consumer(VOTES_STREAM, self.consumer)

    def ask(self) -> None:
        """Ask for as many messages as the caller has room for, in requests of up to a batch."""
        connection = self._connection
        if connection is None or connection.lost:
            return
        wanted = self._room() - sum(remaining for _, remaining in self._requests)
        while wanted >= max(1, self._batch_size // 2) and len(self._requests) < MAX_REQUESTS:
            count = min(self._batch_size, wanted)
            token = next(self._tokens)
            self._requests.append([token, count])
            body = b'{"batch":%d,"expires":%d}' % (count, EXPIRES_NS)
            connection.write(b"PUB %s%s%d %d\r\n%s\r\n" % (self._next_subject, self._inbox, token, len(body), body))
            wanted -= count

    # -- from the connection -----------------------------------------------------------------------------------

    def delivered(self, seq: int, consumer_seq: int, pending: int, subject: str, data: bytes) -> None:
        if consumer_seq != self._consumer_seq + 1:
            self._trouble(f"the consumer skipped from {self._consumer_seq} to {consumer_seq}")
            return
        self._consumer_seq = consumer_seq
        requests = self._requests
        if requests:
            requests[0][1] -= 1
            if requests[0][1] <= 0:
                requests.popleft()
        self._on_delivery(seq, consumer_seq, pending, subject, data)

    def ended(self, token: bytes, status: str | None, description: str) -> None:
        """A pull request ended before it got all it asked for: it expired (408), or the consumer refused (409)."""
        if status == "409" and "deleted" in description.lower():
            self._trouble(f"the consumer was deleted ({description})")
            return
        if status == "503":  # no responders: a request to a consumer that is no more
            self._trouble("the consumer is gone (no responders to a pull request)")
            return
        if status not in ("404", "408", "409"):
            return  # a heartbeat or anything else this does not ask for
        ended = int(token)
        self._requests = deque(request for request in self._requests if request[0] != ended)
        self.ask()

    def connection_lost(self, _: WireConnection) -> None:
        self._trouble("the connection to NATS was lost")

    def _trouble(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connection is not None and not self._connection.lost:
            self._connection.close()
        log.warning("replay (consumer %s): %s", self.consumer, reason)
        self._on_trouble(reason)
