"""Cross-origin use by widgets embedded in the listed sites, with the voter cookie.

Litestar's own CORS middleware is not used: it adds Access-Control-Allow-Credentials and the exposed headers
to answers for any origin. Here an origin on the allow-list gets the CORS headers (with credentials, so the
cookie travels) and a preflight answer; any other origin gets no CORS header at all, and a state-changing
request from a page of an unlisted origin is refused before it reaches a handler, so a page elsewhere cannot
make a visitor's browser replace their voter cookie or cast a vote with it. Pages served by the API's own host
are same-origin and pass untouched.
"""

from collections.abc import Iterable

import msgspec
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send

from contracts.http import ErrorBody
from services.shared.observed_asgi import note_refusal

ALLOW_METHODS = "GET, POST, DELETE"
ALLOW_HEADERS = "Content-Type, X-Voter-Token, Idempotency-Key"
EXPOSE_HEADERS = "RateLimit, RateLimit-Policy, Retry-After"
MAX_AGE_S = 600
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    # The Host a browser sends is the one it connected to, which a page elsewhere cannot change. The scheme is
    # not compared: behind a TLS-terminating proxy this process sees http while the page is https.
    _, sep, authority = origin.partition("://")
    return bool(sep) and host is not None and authority == host.lower()


def _add_vary(headers: MutableScopeHeaders, values: str) -> None:
    existing = headers.get("vary")
    headers["Vary"] = f"{existing}, {values}" if existing else values


class CorsMiddleware:
    def __init__(self, app: ASGIApp, origins: Iterable[str]) -> None:
        self._app = app
        self._origins = frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self._app(scope, receive, send)
            return
        if _same_origin(origin, _header(scope, b"host")):
            # A page served by this API itself (no CORS involved): nothing to add, nothing to refuse.
            await self._app(scope, receive, send)
            return
        allowed = origin in self._origins
        method = scope["method"]
        if method == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
            if not allowed:
                note_refusal(scope, "origin_not_allowed")
            await self._preflight(send, origin, allowed)
            return
        if not allowed and method in _UNSAFE_METHODS:
            note_refusal(scope, "origin_not_allowed")
            await self._refuse(send, origin)
            return
        await self._app(scope, receive, self._with_cors_headers(send, origin if allowed else None))

    def _with_cors_headers(self, send: Send, origin: str | None) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                if origin is not None:
                    headers["Access-Control-Allow-Origin"] = origin
                    headers["Access-Control-Allow-Credentials"] = "true"
                    headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                # The answer depends on the Origin header: caches must not hand one site's answer to another.
                _add_vary(headers, "Origin")
            await send(message)

        return wrapped

    async def _preflight(self, send: Send, origin: str, allowed: bool) -> None:
        headers = [(b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if not allowed:
            await self._send_json(send, 403, _refusal(origin), headers)
            return
        headers += [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", ALLOW_METHODS.encode()),
            (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
            (b"access-control-max-age", str(MAX_AGE_S).encode()),
        ]
        await _send(send, 204, headers, b"")

    async def _refuse(self, send: Send, origin: str) -> None:
        await self._send_json(send, 403, _refusal(origin), [(b"vary", b"Origin")])

    @staticmethod
    async def _send_json(send: Send, status: int, body: ErrorBody, headers: list[tuple[bytes, bytes]]) -> None:
        content = msgspec.json.encode(body)
        await _send(send, status, [*headers, (b"content-type", b"application/json")], content)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)


def _refusal(origin: str) -> ErrorBody:
    return ErrorBody(
        error="origin_not_allowed",
        detail=f"pages of {origin[:100]!r} may not call this API (it is not one of the configured site origins)",
    )
