"""The answers to a vote, encoded once where they never change, and sent either through Litestar or straight to
the ASGI server (``cast_fast_path.py``) with the same bytes and headers."""

from typing import NamedTuple

import msgspec
from litestar import Response

from contracts.http import VoteAccepted

_encoder = msgspec.json.Encoder()

JSON = b"application/json"
UNCHANGED_BODY = _encoder.encode(VoteAccepted(status="unchanged"))


class Reply(NamedTuple):
    status: int
    body: bytes
    headers: dict[str, str]

    def response(self) -> Response[bytes]:
        """As ``services.shared.http.json_response`` answers."""
        return Response(content=self.body, status_code=self.status, media_type="application/json", headers=self.headers)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers Litestar would send for ``response()``: ours (lower-cased), then content type and length."""
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        headers += [(b"content-type", JSON), (b"content-length", b"%d" % len(self.body))]
        return headers


def unchanged(headers: dict[str, str]) -> Reply:
    return Reply(200, UNCHANGED_BODY, headers)


def accepted(event_id: str, headers: dict[str, str]) -> Reply:
    return Reply(202, _encoder.encode(VoteAccepted(status="accepted", event_id=event_id)), headers)
