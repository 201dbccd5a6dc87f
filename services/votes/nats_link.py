"""The votes service's own NATS connection for vote publishes: one write per event-loop turn, acks read in place.

nats-py spends more CPU per vote than the vote itself needs: a publish validates the subject and builds the header
block, queues a flush for a task of its own, and each acknowledgement becomes a ``Msg`` that goes through the
subscription's queue and task before its callback runs. This connection speaks the few parts of the NATS protocol
a publisher needs (INFO, CONNECT, SUB, HPUB, MSG/HMSG, PING/PONG, -ERR): every publish made during one turn of
the event loop goes out in one write, and each reply on the inbox is handed to ``on_reply`` from
``data_received``. The vote's guarantee is unchanged: the publisher (publisher.py) answers a vote only once
JetStream's acknowledgement arrived here.

It speaks plain ``nats://`` only, with the user and password or token of the URL. Any other URL (TLS, websockets),
and a server that asks for TLS, is refused with ``LinkUnsupported``, and the publisher uses nats-py's connection
instead. Several servers (a cluster): the first that answers, and on a lost connection the next, one round a
second until one does; meanwhile publishes fail at once (503). The server's pings are answered; ours, every
``PING_INTERVAL_S``, find a server that went silent: two unanswered, and the connection is dropped and made again.
Subjects are not checked here: the only ones sent are the vote stream's subjects of catalogue ids (slugs) and the
inbox, and the message ids are event ids.
"""

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

PING_INTERVAL_S = 5.0
MAX_OUTSTANDING_PINGS = 2
RECONNECT_WAIT_S = 1.0

ReplyHandler = Callable[[str, bytes, str | None], None]
"""Told of each reply on the inbox: its token (the last subject token), the data, and the status of a status
message (``"503"``: no responders) or None."""


class LinkUnsupported(Exception):
    """A server address or server this connection does not speak (TLS, websockets)."""


class LinkDown(Exception):
    """Not connected to any server now, or the connection was lost with publishes in flight."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @classmethod
    def parse(cls, url: str) -> "Server":
        parts = urlsplit(url if "://" in url else "nats://" + url)
        if parts.scheme != "nats":
            raise LinkUnsupported(f"{parts.scheme}:// is not spoken by the vote publisher's own connection")
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if user is not None and password is None:
            return cls(parts.hostname or "localhost", parts.port or 4222, token=user)  # nats://TOKEN@host
        return cls(parts.hostname or "localhost", parts.port or 4222, user, password)

    def connect_options(self, name: str) -> bytes:
        options: dict[str, object] = {
            "verbose": False, "pedantic": False, "tls_required": False, "name": name, "lang": "python3",
            "version": "shipskip", "protocol": 1, "headers": True, "no_responders": True, "echo": False,
        }  # fmt: skip
        if self.token is not None:
            options["auth_token"] = self.token
        if self.user is not None:
            options["user"], options["pass"] = self.user, self.password
        return json.dumps(options, separators=(",", ":")).encode()


def parse_servers(url: str) -> list[Server]:
    """The comma-separated servers of a NATS URL; LinkUnsupported when any is not plain ``nats://``."""
    return [Server.parse(part.strip()) for part in url.split(",") if part.strip()]


class _Connection(asyncio.Protocol):
    """One TCP connection: the handshake, then frames out and replies in."""

    def __init__(
        self,
        server: Server,
        name: str,
        inbox: bytes,
        on_reply: ReplyHandler,
        on_lost: Callable[["_Connection"], None],
    ) -> None:
        self._server = server
        self._name = name
        self._inbox = inbox  # b"_INBOX.<random>." : replies come to <inbox><token>
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self._got_info = False
        self._pings_out = 0
        self._pinger: asyncio.TimerHandle | None = None
        self.lost = False

    # -- the connection's life -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"the server closed the connection: {exc or 'end of stream'}")

    def _fail(self, reason: str) -> None:
        if self.lost:
            return
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(LinkDown(reason))
        if self._pinger is not None:
            self._pinger.cancel()
        if self._transport is not None:
            self._transport.abort()
        log.warning("nats (vote publishes): %s", reason)
        self._on_lost(self)

    def close(self) -> None:
        if not self.lost:
            self.lost = True
            if self._pinger is not None:
                self._pinger.cancel()
            if self._transport is not None:
                self._transport.close()  # what was written still goes out

    def _ping(self) -> None:
        if self._pings_out >= MAX_OUTSTANDING_PINGS:
            self._fail(f"no PONG to {MAX_OUTSTANDING_PINGS} pings {PING_INTERVAL_S:.0f} s apart")
            return
        self._pings_out += 1
        self.write(b"PING\r\n")
        self._pinger = self._loop.call_later(PING_INTERVAL_S, self._ping)

    # -- out ---------------------------------------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(frame)

    def _flush(self) -> None:
        if self._outgoing and self._transport is not None and not self.lost:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    # -- in ----------------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        position = 0
        try:
            while (end := buffer.find(b"\r\n", position)) >= 0:
                line = bytes(buffer[position:end])
                start = end + 2
                if line.startswith((b"MSG ", b"HMSG ")):
                    parts = line.split(b" ")
                    total = int(parts[-1])
                    if len(buffer) < start + total + 2:
                        break  # the rest of the message has not arrived: read this line again then
                    headers = int(parts[-2]) if line[0] == 0x48 else 0  # "H": HMSG subject sid [reply] hdr total
                    self._reply(parts[1], buffer, start, headers, total)
                    position = start + total + 2
                    continue
                position = start
                self._control(line)
                if self.lost:
                    return  # ended by what the server said (-ERR): nothing after it counts
        except ValueError as exc:
            self._fail(f"unreadable data from the server: {exc}")
            return
        del buffer[:position]

    def _reply(self, subject: bytes, buffer: bytearray, start: int, headers: int, total: int) -> None:
        if not subject.startswith(self._inbox):
            return
        status = None
        if headers:  # a status message ("NATS/1.0 503"), or a reply with headers
            status = buffer[start + 9 : start + 12].decode() if buffer[start + 8 : start + 9] == b" " else None
        self._on_reply(subject[len(self._inbox) :].decode(), bytes(buffer[start + headers : start + total]), status)

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.write(b"PONG\r\n")
        elif line == b"PONG":
            self._pings_out = 0
            if not self.ready.done():  # the answer to the handshake's PING: CONNECT and SUB were taken
                self.ready.set_result(None)
                self._pinger = self._loop.call_later(PING_INTERVAL_S, self._ping)
        elif line.startswith(b"INFO "):
            if not self._got_info:
                self._got_info = True
                self._handshake(json.loads(line[5:]))
        elif line.startswith(b"-ERR"):
            reason = line[5:].decode(errors="replace")
            if "permissions violation" in reason.lower():
                # The server keeps the connection: only that publish is refused (it fails at its deadline).
                log.warning("nats (vote publishes): %s", reason)
            else:
                self._fail(f"the server refused: {reason}")
        elif line != b"+OK":
            raise ValueError(f"unknown operation {line[:20]!r}")

    def _handshake(self, info: dict[str, object]) -> None:
        if info.get("tls_required"):
            self.ready.set_exception(LinkUnsupported("the server requires TLS"))
            self.close()
            return
        if not info.get("headers", False):
            self.ready.set_exception(LinkUnsupported("the server does not take headers (Nats-Msg-Id)"))
            self.close()
            return
        connect = self._server.connect_options(self._name)
        self.write(b"CONNECT %s\r\nSUB %s* 1\r\nPING\r\n" % (connect, self._inbox))


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
        self._inbox = b"_INBOX.%s." % secrets.token_hex(11).encode()
        self._connection: _Connection | None = None
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

    def publish(self, subject: str, reply_token: str, msg_id: str, payload: bytes) -> None:
        """Send one publish with a Nats-Msg-Id (JetStream's dedup) whose reply comes to ``reply_token``."""
        connection = self._connection
        if connection is None or not self.connected:
            raise LinkDown("not connected to NATS")
        header = b"NATS/1.0\r\nNats-Msg-Id: %s\r\n\r\n" % msg_id.encode()
        sizes = len(header), len(header) + len(payload)
        reply = self._inbox + reply_token.encode()
        connection.write(b"HPUB %s %s %d %d\r\n%s%s\r\n" % (subject.encode(), reply, *sizes, header, payload))

    async def _connect(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout_s):
            _, connection = await loop.create_connection(
                lambda: _Connection(server, self._name, self._inbox, self._on_reply, self._lost),
                server.host,
                server.port,
            )
            try:
                await connection.ready
            except BaseException:
                connection.close()
                raise
        self._connection = connection

    def _lost(self, connection: _Connection) -> None:
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
