"""A minimal HTTP server for ``/metrics``, ``/healthz``, ``/readyz``: the projector's (which serves no API), and the
HTTP services' ops ports (services/shared/ops_port.py), one per granian worker sharing the port (``reuse_port``).

Runs on the process's own event loop (so ``/readyz`` checks its live connections), answers GET and HEAD, one
request per connection; anything else is a JSON 404/405/400. Request lines and headers are capped and time-bound:
a slow or hostile client costs one small task until ``READ_TIMEOUT_S``.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import msgspec

from contracts.http import ErrorBody
from services.shared.logs import REQUEST_ID
from services.shared.observed_asgi import request_id

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0
MAX_HEAD_BYTES = 8192

Answer = tuple[int, str, bytes]
"""Status, content type, body."""
Route = Callable[[], Awaitable[Answer]]


def json_answer(status: int, body: object) -> Answer:
    return status, "application/json", msgspec.json.encode(body)


def _refusal(status: int, error: str, detail: str) -> Answer:
    return json_answer(status, ErrorBody(error=error, detail=detail))


class MonitorServer:
    def __init__(self, routes: dict[str, Route], host: str, port: int, *, reuse_port: bool = False) -> None:
        self._routes = routes
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one the system picked, when asked for 0)."""
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEAD_BYTES, reuse_port=self._reuse_port or None
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.split(b"\r\n")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                headers.append((name.strip().lower(), value.strip()))
        rid = request_id(headers)
        token = REQUEST_ID.set(rid)
        try:
            method, status, content_type, body = await self._answer(lines[0])
            reason = HTTPStatus(status).phrase
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                f"X-Request-Id: {rid}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            REQUEST_ID.reset(token)
            writer.close()

    async def _answer(self, request_line: bytes) -> tuple[bytes, int, str, bytes]:
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return b"GET", *_refusal(400, "bad_request", "not an HTTP/1 request line")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        route = self._routes.get(target.decode("latin-1"))
        if route is None:
            return method, *_refusal(404, "not_found", f"serves only {', '.join(sorted(self._routes))}")
        if method not in (b"GET", b"HEAD"):
            return method, *_refusal(405, "method_not_allowed", "GET or HEAD only")
        try:
            return method, *await route()
        except Exception:  # a probe must answer, whatever broke
            log.exception("monitoring route %s failed", target[:100])
            return method, *_refusal(500, "internal_error", "internal error; it has been logged")
