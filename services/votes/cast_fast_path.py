"""The vote POST answered without Litestar's per-request handler machinery, with the same answers.

Litestar, or ``cast_front.py`` for it, still routes the request (path template, path parameters, body size limit of
the route) and runs every middleware listed before this one (CORS); this one, the innermost, takes over where the
route would build its parameter model, call the handler and turn the returned Response into ASGI messages.
``routes.cast`` runs as the handler would run it, and its reply goes out with the bytes and headers Litestar would
send (``Reply``). A refusal (an ApiError, Litestar's 413, anything unexpected) goes through Litestar's own
ExceptionHandlerMiddleware with the route's handlers, as the handler's would, so every error answer is unchanged.

Only routes flagged with ``opt={CAST_FAST_PATH: True}`` are taken; everything else passes through untouched.
"""

from typing import Any

from litestar import Request
from litestar._asgi.utils import wrap_in_exception_handler  # the wrapper Litestar puts around every route
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from services.votes.replies import Reply
from services.votes.routes import CAST_FAST_PATH, cast


class CastFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._answer = wrap_in_exception_handler(self._cast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: Any = scope.get("route_handler")
        if handler is not None and handler.opt.get(CAST_FAST_PATH):
            await self._answer(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    @staticmethod
    async def _cast(scope: Scope, receive: Receive, send: Send) -> None:
        request: Request[Any, Any, Any] = Request(scope, receive, send)
        await send_reply(send, await cast(request, scope["path_params"]["comparison_id"]))


async def send_reply(send: Send, reply: Reply) -> None:
    """The two ASGI messages Litestar sends for ``reply.response()``."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": reply.status,
        "headers": reply.raw_headers(),
    }
    await send(start)
    body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": reply.body, "more_body": False}
    await send(body)
