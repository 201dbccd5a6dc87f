"""The parts of a request the vote routes read, taken straight from the ASGI scope and messages.

Litestar's ``Request`` decodes every header into a multidict the first time any is read, and reads the body
through an async generator: together a twelfth of the votes process's CPU per vote outside the HTTP server
(in-process profile, bench/README.md). The routes read a few headers and one small body; here one pass over the
raw headers keeps those (and every X-Forwarded-For), and the body is read with the same limit and the same refusals as
``Request.stream`` (413 past the route's limit, announced or streamed; a 400 for a content-length that is not a
number; the disconnect error), so every answer stays what Litestar gave. What needs parsing (a cookie, a
content type other than plain ``application/json``) is left to ``Request``'s own parsers.
"""

from collections.abc import Iterable

from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import HTTPReceiveMessage, Receive

VOTER_HEADER = "X-Voter-Token"
VOTER_COOKIE = "shipskip_voter"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
"""The longest Idempotency-Key accepted, in characters (of the header's bytes read as latin-1)."""

_KEPT = frozenset(
    {VOTER_HEADER.lower().encode(), IDEMPOTENCY_HEADER.lower().encode(), b"origin", b"content-type", b"content-length"}
)
_FORWARDED_FOR = b"x-forwarded-for"


class RequestHeaders:
    """The first value of each header the routes read (as ``Headers.get``), and every X-Forwarded-For line.

    ASGI servers give header names in lower case (the specification asks it), which is how they are matched.
    """

    __slots__ = ("_first", "forwarded_for")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        first: dict[bytes, str] = {}
        forwarded_for: list[str] = []
        for name, value in raw:
            if name in _KEPT:
                if name not in first:
                    first[name] = value.decode("latin-1")
            elif name == _FORWARDED_FOR:
                forwarded_for.append(value.decode("latin-1"))
        self._first = first
        self.forwarded_for = forwarded_for

    def get(self, name: bytes) -> str | None:
        """``name`` is one of the kept headers, in lower case."""
        assert name in _KEPT, f"{name!r} is not read from requests"
        return self._first.get(name)


async def read_body(receive: Receive, headers: RequestHeaders, limit: float) -> bytes:
    """The whole body, at most ``limit`` bytes (the route's ``request_max_body_size``), as ``Request.body()``."""
    announced = headers.get(b"content-length")
    if announced is not None:
        try:
            length = int(announced)
        except ValueError:
            raise ClientException(f"Invalid content-length: {announced!r}") from None
        if length > limit:
            raise RequestEntityTooLarge
    chunks: list[bytes] = []
    received = 0
    while True:
        message: HTTPReceiveMessage = await receive()  # type: ignore[assignment]
        if message["type"] == "http.request":
            chunk = message["body"]
            if chunk:
                received += len(chunk)
                if received > limit:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
