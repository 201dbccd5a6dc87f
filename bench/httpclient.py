"""A minimal HTTP/1.1 client on asyncio, fast enough to drive and watch the services from Python.

httpx costs about a millisecond of CPU per request; this costs a few tens of microseconds, which is what a
load generator or a tight poll needs. It speaks only what the benchmarks use: keep-alive requests answered with
a Content-Length body, and one server-sent-event stream (chunked or not).
"""

import asyncio
from collections.abc import AsyncGenerator, Mapping


class HttpError(Exception):
    """The connection broke or the reply was not HTTP/1.1 as we expect it."""


def build_request(
    method: str, path: str, port: int, headers: Mapping[str, str] | None = None, body: bytes | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head + body if body is not None else head


def _parse_reply(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes consumed) once a whole reply is in ``buffer``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower()
    if not head.startswith(b"http/1."):
        raise HttpError(f"not an HTTP/1.x reply: {bytes(buffer[:40])!r}")
    status = int(head[9:12])
    marker = head.find(b"\r\ncontent-length:")
    if marker < 0:
        raise HttpError("a reply without Content-Length")
    line_end = head.find(b"\r\n", marker + 2)
    length = int(head[marker + 17 : line_end if line_end >= 0 else len(head)])
    total = end + 4 + length
    if len(buffer) < total:
        return None
    return status, bytes(buffer[end + 4 : total]), total


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> "HttpConnection":
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            parsed = _parse_reply(self._buffer)
        except (HttpError, ValueError) as exc:
            waiter.set_exception(HttpError(str(exc)))
            return
        if parsed is not None:
            status, body, used = parsed
            del self._buffer[:used]
            waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = HttpError(f"connection lost: {exc}")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    @property
    def usable(self) -> bool:
        return self._lost is None and self._transport is not None and not self._transport.is_closing()

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one whole request (``build_request``) and wait for its reply: (status, body)."""
        if self._lost is not None or self._transport is None:
            raise self._lost or HttpError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def sse_stream(port: int, path: str, timeout_s: float = 2.0) -> AsyncGenerator[bytes, None]:
    """The ``data`` of each server-sent event on ``path``; raises HttpError unless it answers 200 event-stream."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout_s)
    try:
        writer.write(build_request("GET", path, port, {"Accept": "text/event-stream"}))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        lowered = head.lower()
        if not lowered.startswith(b"http/1.1 200") or b"text/event-stream" not in lowered:
            raise HttpError(f"not an event stream: {head[:200]!r}")
        chunked = b"transfer-encoding: chunked" in lowered
        pending = b""
        data: list[bytes] = []
        while True:
            if chunked:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                pending += chunk[:-2]
            else:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                line = line.rstrip(b"\r")
                if not line:
                    if data:
                        yield b"\n".join(data)
                        data = []
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
    finally:
        writer.close()
