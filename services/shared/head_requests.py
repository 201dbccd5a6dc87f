"""HEAD answered as GET without its body, on every route of a service (RFC 9110 §9.3.2: a server that answers GET
answers HEAD).

Litestar routes HEAD only to handlers declared for it, so every GET resource answered 405. Declaring each handler
for GET and HEAD would put a second operation per path in the OpenAPI documents and leave the body to the HTTP
server to drop; instead the request is routed as the GET it stands for, its answer keeps the GET's status and
headers (Content-Length included: what a GET would get), and the body is not sent. A streamed answer (the live
figures) ends with its head: the stream is then told the client went away, so it stops.
"""

import asyncio
from typing import Any, cast

from litestar.types import ASGIApp, HTTPDisconnectEvent, Message, Receive, ReceiveMessage, Scope, Send

_DISCONNECT: HTTPDisconnectEvent = {"type": "http.disconnect"}


async def answer_head(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` on a HEAD request (``scope``, changed in place) as on a GET, sending no body."""
    cast("dict[str, Any]", scope)["method"] = "GET"
    ended = asyncio.Event()

    async def send_head(message: Message) -> None:
        if ended.is_set():
            return
        if message["type"] == "http.response.body":
            ended.set()
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    async def receive_until_ended() -> ReceiveMessage:
        if ended.is_set():
            return _DISCONNECT
        waiting = asyncio.ensure_future(receive())
        stop = asyncio.ensure_future(ended.wait())
        await asyncio.wait((waiting, stop), return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            stop.cancel()
            return waiting.result()
        waiting.cancel()
        return _DISCONNECT

    await app(scope, receive_until_ended, send_head)
