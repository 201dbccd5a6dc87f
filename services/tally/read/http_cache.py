"""Ready-made HTTP answers for the community figures: built once per change, sent as is on every read.

A Litestar handler may return any ASGI app; returning one of these skips building a Response per request, so a
read costs about what a bare handler costs. The ETag is derived from the comparison's position plus a short hash
of the body, so anything else that changes the bytes (the catalogue's names, the minimum ballots, a rebuild that
recounted under the same position, a new release's format) changes the tag too: a strong tag must name the bytes.
"""

import hashlib

from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

CACHE_CONTROL = "public, max-age=1, stale-while-revalidate=10, stale-if-error=60"
"""A CDN (and a browser) may serve it for a second, then serve the stale copy while it revalidates."""

PUBLIC_ORIGINS = b"*"
"""Public figures, read without credentials: any site's pages may fetch them (and open the stream)."""


def entity_tag(position: int, body: bytes) -> str:
    return f'"{position}-{hashlib.blake2b(body, digest_size=8).hexdigest()}"'


def none_match(if_none_match: str, etag: str) -> bool:
    """RFC 9110 If-None-Match: ``*`` or any listed tag equal to ours under the weak comparison."""
    if if_none_match == etag:
        return True
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def request_header(scope: Scope, name: bytes) -> str | None:
    """One request header, read straight from the ASGI scope (names arrive lower-case)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class Answer:
    """A complete HTTP answer as an ASGI app."""

    __slots__ = ("_body", "_headers", "_status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
        self._status = status
        self._headers = headers
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": self._status,
            "headers": self._headers,
        }
        await send(start)
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": self._body, "more_body": False}
        await send(body)


class CachedJson:
    """A JSON body with its ETag: the 200 answer, and the 304 for a client that holds it already."""

    __slots__ = ("etag", "not_modified", "ok")

    def __init__(self, body: bytes, position: int) -> None:
        self.etag = entity_tag(position, body)
        validators = [
            (b"etag", self.etag.encode()),
            (b"cache-control", CACHE_CONTROL.encode()),
            (b"access-control-allow-origin", PUBLIC_ORIGINS),
        ]
        self.ok = Answer(
            200,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *validators,
            ],
            body,
        )
        self.not_modified = Answer(304, validators)

    def answer(self, if_none_match: str | None) -> Answer:
        if if_none_match is not None and none_match(if_none_match, self.etag):
            return self.not_modified
        return self.ok


CLOSED_CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=60"
"""History that ends before now: its buckets are closed and change only when a void erases a voter's ballots
(docs/design.md), so a CDN may keep it for an hour."""


def json_answer(body: bytes, cache_control: str, if_none_match: str | None) -> Answer:
    """A JSON answer read from Postgres per request: its ETag names the bytes, so a 304 saves the transfer."""
    etag = f'"h-{hashlib.blake2b(body, digest_size=8).hexdigest()}"'
    validators = [
        (b"etag", etag.encode()),
        (b"cache-control", cache_control.encode()),
        (b"access-control-allow-origin", PUBLIC_ORIGINS),
    ]
    if if_none_match is not None and none_match(if_none_match, etag):
        return Answer(304, validators)
    return Answer(
        200, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *validators], body
    )
