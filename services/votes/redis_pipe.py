"""Redis commands of concurrent requests coalesced on one dedicated connection: one write per event-loop turn.

redis-py spends more CPU per command than the vote itself needs (a pool checkout, a lock, a parser round per
reply), and sends each request's command in a write of its own. Here every command issued during one turn of the
event loop goes out in one write on a connection kept for this, and the replies are read as they come (hiredis),
each resolving its caller's future in order. Each command stays what it was, atomic in Redis; only the round trips
are shared.

Failures are those of redis-py, so that ``RedisLink`` handles them alike: ``ConnectionError`` when the connection
cannot be made or is lost (every command in flight on it fails), ``TimeoutError`` when the oldest command has
waited ``timeout_s`` for its reply (the connection is then dropped, since the replies after it would no longer
match), ``ResponseError`` for an error reply. The next command connects again.
"""

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.connection import Connection, UnixDomainSocketConnection

Arg = bytes | str | int


@dataclass(frozen=True)
class PipeAddress:
    """Where to connect, and the handshake; taken from the pool redis-py built from the URL."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    """A Unix socket, instead of host and port."""
    username: str | None = None
    password: str | None = None
    db: int = 0

    @classmethod
    def of_pool(cls, pool: BlockingConnectionPool) -> "PipeAddress | None":
        """None for what this does not speak (TLS): redis-py's pool serves those alone."""
        kwargs = pool.connection_kwargs
        address = cls(username=kwargs.get("username"), password=kwargs.get("password"), db=int(kwargs.get("db") or 0))
        if pool.connection_class is UnixDomainSocketConnection:
            return replace(address, path=str(kwargs["path"]))
        if pool.connection_class is Connection:
            return replace(address, host=str(kwargs.get("host", "localhost")), port=int(kwargs.get("port", 6379)))
        return None


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Link(asyncio.Protocol):
    """One connection: commands written in order, replies matched to their futures in the same order."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise redis_errors.ConnectionError(f"the Redis connection was lost: {self.lost}")
        future: asyncio.Future[Any] = self._loop.create_future()
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(command)
        self._waiting.append((future, time.monotonic()))
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._check_deadline)
        return future

    def _flush(self) -> None:
        if self._outgoing and self._transport is not None and self.lost is None:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                future, _ = self._waiting.popleft()
                if not future.done():  # its caller may have been cancelled
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(redis_errors.ConnectionError(f"unexpected data from Redis: {exc}"))

    def _check_deadline(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        oldest = self._waiting[0][1]
        overdue = time.monotonic() - oldest
        if overdue >= self._timeout_s:
            self._fail(redis_errors.TimeoutError(f"no reply from Redis within {self._timeout_s} s"))
        else:
            self._timer = self._loop.call_later(self._timeout_s - overdue, self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis_errors.ConnectionError(f"Redis closed the connection: {exc or 'end of stream'}"))

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self._fail(redis_errors.ConnectionError("closed"))


class RedisPipe:
    def __init__(self, address: PipeAddress, *, timeout_s: float) -> None:
        self._address = address
        self._timeout_s = timeout_s
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None

    async def execute(self, *args: Arg) -> Any:
        """The command's reply; raises as redis-py would (see the module's docstring)."""
        link = self._link
        if link is None or link.lost is not None:
            link = await self._connected()
        reply = await link.send(pack(args))
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise redis_errors.NoScriptError(message)
            raise redis_errors.ResponseError(message)
        return reply

    async def run_script(self, sha: str, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """EVALSHA, or EVAL when Redis does not hold the script (restarted, flushed): that also caches it."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def _connected(self) -> _Link:
        # Concurrent callers share one attempt; shielded, so that one caller giving up does not end it for all.
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(lambda _: setattr(self, "_connecting", None))
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        address = self._address
        try:
            async with asyncio.timeout(self._timeout_s):
                if address.path is not None:
                    _, link = await loop.create_unix_connection(lambda: _Link(self._timeout_s), address.path)
                else:
                    _, link = await loop.create_connection(lambda: _Link(self._timeout_s), address.host, address.port)
                handshake = []
                if address.password is not None:
                    credentials = (address.username, address.password) if address.username else (address.password,)
                    handshake.append(link.send(pack(("AUTH", *credentials))))
                if address.db:
                    handshake.append(link.send(pack(("SELECT", address.db))))
                for reply in await asyncio.gather(*handshake):
                    if isinstance(reply, hiredis.ReplyError):
                        link.close()
                        raise redis_errors.ConnectionError(f"Redis refused the handshake: {reply}")
        except TimeoutError:
            raise redis_errors.TimeoutError(f"could not connect to Redis within {self._timeout_s} s") from None
        except OSError as exc:
            raise redis_errors.ConnectionError(f"could not connect to Redis: {exc}") from exc
        self._link = link
        return link

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None
