"""The votes service's own NATS connection for vote publishes: one write per event-loop turn, acks read in place.

nats-py spends more CPU per vote than the vote itself needs: a publish validates the subject and builds the header
block, queues a flush for a task of its own, and each acknowledgement becomes a ``Msg`` that goes through the
subscription's queue and task before its callback runs. This connection (services/shared/nats_wire.py, plus HPUB)
sends every publish made during one turn of the event loop in one write, and hands each reply on the inbox to
``on_reply`` from ``data_received``. The vote's guarantee is unchanged: the publisher (publisher.py) answers a vote
only once JetStream's acknowledgement arrived here.

It speaks plain ``nats://`` only, with the user and password or token of the URL. Any other URL (TLS, websockets),
and a server that asks for TLS, is refused with ``LinkUnsupported``, and the publisher uses nats-py's connection
instead. Several servers (a cluster): the first that answers, and on a lost connection the next, one round a
second until one does; meanwhile publishes fail at once (503). A server gone silent (nats_wire's pings) is dropped
and the connection made again.
Subjects are not checked here: the only ones sent are the vote stream's subjects of catalogue ids (slugs) and the
inbox, and the message ids are event ids.
"""

import asyncio
import logging
from collections.abc import Callable

from services.shared.nats_wire import (
    LinkDown,
    LinkUnsupported,
    Server,
    WireConnection,
    new_inbox,
    open_connection,
    parse_servers,
    status_of,
)

__all__ = ["LinkDown", "LinkUnsupported", "NatsLink", "Server", "parse_servers"]

log = logging.getLogger(__name__)

RECONNECT_WAIT_S = 1.0

ReplyHandler = Callable[[str, bytes, str | None], None]
"""Told of each reply on the inbox: its token (the last subject token), the data, and the status of a status
message (``"503"``: no responders) or None."""


class _Connection(WireConnection):
    """The publisher's connection: each message on the inbox is the reply to one publish."""

    def __init__(
        self,
        server: Server,
        name: str,
        inbox: bytes,
        on_reply: ReplyHandler,
        on_lost: Callable[[WireConnection], None],
    ) -> None:
        super().__init__(server, name, inbox, on_lost)
        self._on_reply = on_reply

    def message(self, parts: list[bytes], buffer: bytearray, start: int, headers: int, total: int) -> None:
        subject = parts[1]
        if not subject.startswith(self._inbox):
            return
        status = status_of(buffer, start, headers)  # a status message ("NATS/1.0 503"), or a reply with headers
        self._on_reply(subject[len(self._inbox) :].decode(), bytes(buffer[start + headers : start + total]), status)


class NatsLink:
    """Vote publishes on a connection of their own (see the module's docstring)."""

    def __init__(
        self,
        servers: list[Server],
        name: str,
        on_reply: ReplyHandler,
        on_lost: Callable[[], None],
        connect_timeout_s: float = 2.0,
    ) -> None:
        """``on_lost``: the connection went, with whatever was in flight on it."""
        if not servers:
            raise LinkUnsupported("no server")
        self._servers = servers
        self._name = name
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._connect_timeout_s = connect_timeout_s
        self._inbox = new_inbox()
        self._connection: WireConnection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and not connection.lost and connection.ready.done()

    async def start(self) -> None:
        """Connect to the first server that answers, else keep trying in the background; LinkUnsupported when a
        server wants what this does not speak."""
        for server in self._servers:
            try:
                await self._connect(server)
                return
            except (OSError, TimeoutError, LinkDown) as exc:
                log.warning("nats (vote publishes): %s:%d: %s", server.host, server.port, exc or type(exc).__name__)
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    def publish(self, subject: str, reply_token: str, msg_id: str | None, payload: bytes) -> None:
        """Send one publish, with a Nats-Msg-Id (JetStream's dedup) when given, whose reply comes to ``reply_token``."""
        connection = self._connection
        if connection is None or not self.connected:
            raise LinkDown("not connected to NATS")
        reply = self._inbox + reply_token.encode()
        if msg_id is None:
            connection.write(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply, len(payload), payload))
            return
        header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
        sizes = len(header), len(header) + len(payload)
        connection.write(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply, *sizes, header, payload))

    async def _connect(self, server: Server) -> None:
        def make() -> _Connection:
            return _Connection(server, self._name, self._inbox, self._on_reply, self._lost)

        self._connection = await open_connection(server, make, self._connect_timeout_s)

    def _lost(self, connection: WireConnection) -> None:
        if connection is not self._connection:
            return  # one that never got past its handshake
        self._on_lost()
        if not self._closed and self._reconnecting is None:
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while not self._closed:
                for server in self._servers:
                    try:
                        await self._connect(server)
                        log.info("nats (vote publishes): connected to %s:%d again", server.host, server.port)
                        return
                    except (OSError, TimeoutError, LinkDown, LinkUnsupported):
                        pass
                await asyncio.sleep(RECONNECT_WAIT_S)
        finally:
            self._reconnecting = None

    def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._connection is not None:
            self._connection.close()
