"""The vote POST's answer (``Reply.send``, services/votes/replies.py) sends what Litestar would send for the same
reply as a ``Response``: the same status, headers in the same order and casing, and body."""

from typing import Any

import pytest
from litestar import Litestar, Response, get
from litestar.types import Message, Scope

from services.votes.replies import Reply, accepted, unchanged

REPLIES = [
    accepted("01JDFW3Q7K2M4N5P6R7S8T9V0W", {"RateLimit-Policy": '"voter";q=30;w=60', "RateLimit": '"voter";r=9;t=2'}),
    accepted("01JDFW3Q7K2M4N5P6R7S8T9V0W", {}),
    unchanged({"RateLimit-Policy": '"comparison";q=2000;w=1', "RateLimit": '"comparison";r=1999;t=0'}),
    unchanged({}),
]


def _scope(path: str) -> Scope:
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080), "state": {},
    }  # fmt: skip
    return scope  # type: ignore[return-value]


async def _messages(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(dict(message))

    await app(_scope(path), receive, send)
    return sent


@pytest.mark.parametrize("reply", REPLIES)
async def test_a_reply_sends_what_litestar_sends_for_its_response(reply: Reply) -> None:
    @get("/reply", sync_to_thread=False)
    def through_litestar() -> Response[bytes]:
        return reply.response()

    async def direct(scope: Scope, receive: Any, send: Any) -> None:
        await reply.send(send)

    litestar = await _messages(Litestar(route_handlers=[through_litestar]), "/reply")
    assert litestar[0]["status"] == reply.status  # the handler's reply, not a Litestar error
    assert await _messages(direct, "/reply") == litestar


def test_the_unchanged_answer_is_encoded_once() -> None:
    assert unchanged({}).body == b'{"status":"unchanged","event_id":null}'
    assert accepted("e1", {}).body == b'{"status":"accepted","event_id":"e1"}'
