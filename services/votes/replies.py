"""The answers to a vote, encoded once where they never change, and sent either as a Litestar ``Response`` or as
the two ASGI messages Litestar would send for it (the vote POST's answer, routes.answer_vote)."""

from typing import NamedTuple

import msgspec
from litestar import Response
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Send

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

    async def send(self, send: Send) -> None:
        """The two ASGI messages Litestar sends for ``response()``."""
        headers = self.raw_headers()
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": self.status, "headers": headers}
        await send(start)
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": self.body, "more_body": False}
        await send(body)


def unchanged(headers: dict[str, str]) -> Reply:
    return Reply(200, UNCHANGED_BODY, headers)


def accepted(event_id: str, headers: dict[str, str]) -> Reply:
    return Reply(202, _encoder.encode(VoteAccepted(status="accepted", event_id=event_id)), headers)
