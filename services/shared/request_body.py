"""A request's whole body, read from the ASGI messages with the refusals of ``Request.body()`` but one.

Litestar's ``Request.stream`` answers a body that ends early (``http.disconnect`` before its last part) with an
``InternalServerException``: a 500, counted with the server's own failures. granian gives that message when the
client hangs up mid-body and when its chunked framing is broken, so anyone could raise the 5xx rate that pages
on-call. Here it is the client's fault it is: a 400 ``body_incomplete``, which a client with broken framing still
reads. The rest is as Litestar does it: 413 past the route's limit (announced or streamed), 400 for a
content-length that is not a number.
"""

import math
from typing import Any

from litestar import Request
from litestar.exceptions import ClientException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import HTTPReceiveMessage, Receive

from services.shared.http import ApiError

BODY_INCOMPLETE = "body_incomplete"


def body_incomplete() -> ApiError:
    return ApiError(
        400,
        BODY_INCOMPLETE,
        "the request body ended before it was whole (the connection closed, or the chunked framing is broken)",
    )


async def read_body(receive: Receive, announced: str | None, limit: float) -> bytes:
    """The whole body, at most ``limit`` bytes (the route's ``request_max_body_size``); ``announced`` is the
    Content-Length header, if any."""
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
            raise body_incomplete()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def request_body(request: Request[Any, Any, Any]) -> bytes:
    """``read_body`` of a Litestar request, under its route's limit (for the handlers that would call
    ``request.body()``)."""
    limit = request.route_handler.resolve_request_max_body_size() or math.inf
    return await read_body(request.receive, request.headers.get("content-length"), limit)
