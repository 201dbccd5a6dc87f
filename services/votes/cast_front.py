"""The vote POST routed in front of Litestar: Litestar's own route app for it, without Litestar's per-request routing.

For every request Litestar puts itself on the scope, normalises the path, checks the Host header, walks its route
trie, resolves the route's exception handlers (not cached) and then calls the route's app: the route's middleware
(CORS, ``cast_fast_path.py``) around the handler. For the one path that carries the vote traffic this does the same
once, at start, by asking Litestar's router (``handle_routing``), and per request only what the router would write
on the scope. The route's app and the exception layer around it are Litestar's own, so every answer, error answers
and CORS included, is the one Litestar gives. Anything this does not recognise exactly as a vote POST (another
method, a trailing or doubled slash, a root path, a Host header Litestar would refuse) goes to Litestar untouched.
"""

from typing import Any

from litestar import Litestar
from litestar._asgi.utils import is_valid_host, wrap_in_exception_handler  # what Litestar's router uses
from litestar.enums import ScopeType
from litestar.types import Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

from services.votes.routes import CAST_FAST_PATH

_PREFIX = "/v1/comparisons/"
_SUFFIX = "/votes"


class CastFront:
    def __init__(self, app: Litestar) -> None:
        self.app = app
        # What Litestar would otherwise add around the router (see Litestar._create_asgi_handler, _wrap_send).
        if app.cors_config or app.before_send or _has_plugin(app, "OpenTelemetryPlugin"):
            raise ValueError("CastFront routes past Litestar's own CORS, before_send hooks and OpenTelemetry")
        route_app, handler, _, _, template = app.asgi_router.handle_routing(path=f"{_PREFIX}x{_SUFFIX}", method="POST")
        if not handler.opt.get(CAST_FAST_PATH):
            raise ValueError(f"{_PREFIX}{{comparison_id}}{_SUFFIX} is not the vote route")
        self._handler = handler
        self._template = template
        self._exception_handlers = handler.resolve_exception_handlers()
        self._route = wrap_in_exception_handler(route_app)  # as Litestar wraps its router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        comparison_id = self._vote_path(scope)
        if comparison_id is None:
            await self.app(scope, receive, send)
            return
        # What Litestar.__call__ and its router write on the scope before calling the route.
        scope["app"] = scope["litestar_app"] = self.app
        scope.setdefault("state", {})
        ScopeState.from_scope(scope).exception_handlers = self._exception_handlers
        scope["route_handler"] = self._handler
        scope["path_template"] = self._template
        scope["path_params"] = {"comparison_id": comparison_id}
        await self._route(scope, receive, send)

    @staticmethod
    def _vote_path(scope: Scope) -> str | None:
        """The comparison id of a vote POST that Litestar would route as this one does, else None."""
        if scope["type"] != ScopeType.HTTP or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return None
        comparison_id = path[len(_PREFIX) : -len(_SUFFIX)]
        if not comparison_id or "/" in comparison_id:
            return None
        headers: Any = scope["headers"]
        for name, value in headers:
            if name == b"host":
                return comparison_id if is_valid_host(value) else None  # the first, as the router checks
        return comparison_id


def _has_plugin(app: Litestar, name: str) -> bool:
    try:
        app.plugins.get(name)
    except KeyError:
        return False
    return True
