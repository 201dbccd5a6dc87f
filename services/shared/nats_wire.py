"""The part of the NATS client protocol that shipskip's own connections speak, for the paths nats-py makes costly.

nats-py turns every message into a ``Msg`` that goes through a subscription's queue and task before its callback
runs, and queues a flush for a task of its own on every publish. Two paths carry too many messages for that: the
vote publisher's acks (services/votes/nats_link.py) and a rebuild's replay of the stream
(services/tally/rebuild/replay_wire.py).
Each has a connection of its own built on ``WireConnection``: INFO, CONNECT, one
inbox subscription, PING/PONG both ways, -ERR, and every MSG/HMSG handed to the subclass's ``message`` straight
from ``data_received``; what it writes during one turn of the event loop goes out in one write.

It speaks plain ``nats://`` only, with the user and password or token of the URL. Any other URL (TLS, websockets),
and a server that asks for TLS, is refused with ``LinkUnsupported``, and the caller uses nats-py instead. Our
pings, every ``PING_INTERVAL_S``, find a server that went silent: two unanswered, and the connection is dropped.
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


class LinkUnsupported(Exception):
    """A server address or server this connection does not speak (TLS, websockets)."""


class LinkDown(Exception):
    """Not connected to any server now, or the connection was lost with work in flight."""


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
            raise LinkUnsupported(f"{parts.scheme}:// is not spoken by shipskip's own NATS connections")
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


def new_inbox() -> bytes:
    """A connection's own inbox prefix, ``_INBOX.<random>.``: replies come to it plus a token."""
    return b"_INBOX.%s." % secrets.token_hex(11).encode()


def parse_servers(url: str) -> list[Server]:
    """The comma-separated servers of a NATS URL; LinkUnsupported when any is not plain ``nats://``."""
    return [Server.parse(part.strip()) for part in url.split(",") if part.strip()]


class WireConnection(asyncio.Protocol):
    """One TCP connection: the handshake, then frames out and messages in (see the module's docstring)."""

    def __init__(self, server: Server, name: str, inbox: bytes, on_lost: Callable[["WireConnection"], None]) -> None:
        self._server = server
        self._name = name
        self._inbox = inbox  # b"_INBOX.<random>." : replies come to <inbox><token>
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

    def message(self, parts: list[bytes], buffer: bytearray, start: int, headers: int, total: int) -> None:
        """One MSG or HMSG: ``parts`` its line split at spaces (op, subject, sid, [reply,] [header size,] size);
        the header block (``headers`` bytes, 0 for MSG) and the payload are ``buffer[start : start + total]``."""
        raise NotImplementedError

    # -- the connection's life -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"the server closed the connection: {exc or 'end of stream'}")

    def fail(self, reason: str) -> None:
        """End the connection for ``reason`` (logged) and tell ``on_lost``."""
        if self.lost:
            return
        self.lost = True
        if not self.ready.done():
            self.ready.set_exception(LinkDown(reason))
        if self._pinger is not None:
            self._pinger.cancel()
        if self._transport is not None:
            self._transport.abort()
        log.warning("nats (%s): %s", self._name, reason)
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
            self.fail(f"no PONG to {MAX_OUTSTANDING_PINGS} pings {PING_INTERVAL_S:.0f} s apart")
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
                    self.message(parts, buffer, start, headers, total)
                    position = start + total + 2
                    if self.lost:
                        return  # ended by what the message said
                    continue
                position = start
                self._control(line)
                if self.lost:
                    return  # ended by what the server said (-ERR): nothing after it counts
        except ValueError as exc:
            self.fail(f"unreadable data from the server: {exc}")
            return
        del buffer[:position]

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
                log.warning("nats (%s): %s", self._name, reason)
            else:
                self.fail(f"the server refused: {reason}")
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


def status_of(buffer: bytearray, start: int, headers: int) -> str | None:
    """The status of a status message ("NATS/1.0 503" -> "503"), or None for a header block without one."""
    if headers and buffer[start + 8 : start + 9] == b" ":
        return buffer[start + 9 : start + 12].decode()
    return None


def status_description(buffer: bytearray, start: int, headers: int) -> str:
    """What follows a status message's code ("NATS/1.0 409 Consumer Deleted" -> "Consumer Deleted"), or ""."""
    line_end = buffer.find(b"\r\n", start, start + headers)
    return bytes(buffer[start + 13 : line_end]).decode(errors="replace") if line_end > start + 13 else ""


async def open_connection(server: Server, make: Callable[[], WireConnection], timeout_s: float) -> WireConnection:
    """Connect and wait for the handshake's PONG; LinkDown, LinkUnsupported, OSError or TimeoutError if not."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, connection = await loop.create_connection(make, server.host, server.port)
        try:
            await connection.ready
        except BaseException:
            connection.close()
            raise
    return connection
