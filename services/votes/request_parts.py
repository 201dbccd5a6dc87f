"""The parts of a request the vote routes read, taken straight from the ASGI scope and messages.

Litestar's ``Request`` decodes every header into a multidict the first time any is read, and reads the body
through an async generator: together a twelfth of the votes process's CPU per vote outside the HTTP server
(in-process profile, bench/README.md). The routes read a few headers and one small body; here one pass over the
raw headers keeps those (and every X-Forwarded-For and Cookie line), and the body is read by
services/shared/request_body.py (the refusals of ``Request.stream``, but a 400 for a body that ends early). The
voter cookie is picked out of the Cookie lines here, so that two different ones are seen (``Request.cookies``
keeps one); a content type other than plain ``application/json`` is left to ``Request``'s own parser.
"""

from collections.abc import Iterable
from urllib.parse import unquote

VOTER_HEADER = "X-Voter-Token"
VOTER_COOKIE = "shipskip_voter"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
"""The longest Idempotency-Key accepted, in characters (of the header's bytes read as latin-1)."""

_KEPT = frozenset(
    {VOTER_HEADER.lower().encode(), IDEMPOTENCY_HEADER.lower().encode(), b"origin", b"content-type", b"content-length"}
)
_VOTER = VOTER_HEADER.lower().encode()
_FORWARDED_FOR = b"x-forwarded-for"
_COOKIE = b"cookie"


class RequestHeaders:
    """The first value of each header the routes read (as ``Headers.get``), every X-Forwarded-For and Cookie line,
    and whether X-Voter-Token came again with another value (which one counts is not ours to guess).

    ASGI servers give header names in lower case (the specification asks it), which is how they are matched.
    """

    __slots__ = ("_first", "cookies", "forwarded_for", "voter_repeated")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        first: dict[bytes, str] = {}
        forwarded_for: list[str] = []
        cookies: list[str] = []
        voter_repeated = False
        for name, value in raw:
            if name in _KEPT:
                if name not in first:
                    first[name] = value.decode("latin-1")
                elif name == _VOTER and value.decode("latin-1") != first[name]:
                    voter_repeated = True
            elif name == _FORWARDED_FOR:
                forwarded_for.append(value.decode("latin-1"))
            elif name == _COOKIE:
                cookies.append(value.decode("latin-1"))
        self._first = first
        self.forwarded_for = forwarded_for
        self.cookies = cookies
        self.voter_repeated = voter_repeated

    def get(self, name: bytes) -> str | None:
        """``name`` is one of the kept headers, in lower case."""
        assert name in _KEPT, f"{name!r} is not read from requests"
        return self._first.get(name)


def cookie_values(lines: list[str], name: str) -> list[str]:
    """Every value of the cookie ``name`` in these Cookie lines, each as Litestar reads one (quotes and %-escapes
    undone), in order: a browser sends two of one name when two cookies of different paths or domains match."""
    found: list[str] = []
    for line in lines:
        for pair in line.split(";"):
            key, equals, value = pair.partition("=")
            if equals and key.strip() == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                found.append(unquote(value))
    return found
