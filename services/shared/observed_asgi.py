"""A thin ASGI wrapper around each HTTP service: request ids, request metrics and the access log.

Kept to a few microseconds a request (the vote path is measured by ``make bench``): no middleware stack, the
metric series of a (route, method, status) are looked up once and cached, and nothing is logged for a successful
request unless ``SHIPSKIP_ACCESS_LOG=all``.

- The request id: the client's ``X-Request-Id`` when it is short and safe (1 to 64 of ``A-Z a-z 0-9 . _ : + / = -``),
  else a new random one; set as ``REQUEST_ID`` for every log line written while answering, and sent back as the
  ``X-Request-Id`` response header.
- ``shipskip_http_requests_total{route, method, status}``: the route is the path template the router matched
  (``/v1/comparisons/{comparison_id}/votes``), never the raw path, and ``unmatched`` for a path no route has, so
  the number of series stays bounded whatever clients send. ``shipskip_http_request_duration_seconds{route}``: until
  the response started (for a live stream: until it opened).
- Refusals: the error handlers (services/shared/http.py) note the ``error`` code and the rate limit that refused
  (``note_refusal``) so that a service's own counters (votes refused by reason) need not parse bodies.
"""

import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter

from services.shared.head_requests import answer_head
from services.shared.logs import REQUEST_ID
from services.shared.metric_buffer import BufferedHistogram, BufferedHistogramFamily, MetricBuffer
from services.shared.telemetry_settings import AccessLog

log = logging.getLogger("shipskip.access")

HEADER = b"x-request-id"
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:+/=\-]{1,64}")
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REFUSAL = "shipskip.refusal"

# From a cached read (~0.1 ms) to a publish that waits out its timeout (2 s).
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

AnswerHook = Callable[[Scope, str, int], None]
"""Told of every answer: the scope, the route label and the status (a service's own counters)."""


def note_refusal(scope: Scope, error: str, limit: str | None = None) -> None:
    """Record on the request which refusal it got (the ErrorBody ``error``) and, for a 429, which rate limit."""
    cast("dict[str, Any]", scope)[_REFUSAL] = (error, limit)


def refusal_of(scope: Scope) -> tuple[str, str | None] | None:
    found: tuple[str, str | None] | None = cast("dict[str, Any]", scope).get(_REFUSAL)
    return found


# A new id is this process's random prefix and a counter: unique without a system call per request (os.urandom
# was the largest cost of this wrapper).
_PREFIX = os.urandom(4).hex()
_numbers = itertools.count()


def _new_prefix() -> None:
    global _PREFIX
    _PREFIX = os.urandom(4).hex()


os.register_at_fork(after_in_child=_new_prefix)  # forked workers must not share a prefix


def new_request_id() -> str:
    return f"{_PREFIX}{next(_numbers) & 0xFFFFFFFF:08x}"


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HEADER:
            if _SAFE_ID.fullmatch(value):
                return value.decode()
            break
    return new_request_id()


def route_of(scope: Scope) -> str:
    template: str | None = cast("dict[str, Any]", scope).get("path_template")
    return template or UNMATCHED


class HttpMetrics:
    """The request metrics of one service (in the run's multiprocess files; not in any registry: the multiprocess
    collector reads them from those files), counted through the worker's buffer."""

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self.requests = Counter(
            "shipskip_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=None,
        )
        self.duration = BufferedHistogramFamily(
            "shipskip_http_request_duration_seconds",
            "Time until the response started, by route template",
            ["route"],
            DURATION_BUCKETS,
        )
        self._series: dict[tuple[str, str, int], tuple[Counter, BufferedHistogram]] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        series = self._series.get((route, method, status))
        if series is None:
            label = method if method in _METHODS else "other"
            series = (self.requests.labels(route, label, str(status)), self.duration.labels(route))
            self._series[(route, method, status)] = series
        self._buffer.count(series[0])
        self._buffer.observe(series[1], seconds)


class ObservedApp:
    """The service's ASGI app with request ids, request metrics and access log lines around it; HEAD is answered
    as GET without a body (services/shared/head_requests.py), counted as HEAD."""

    def __init__(
        self, app: ASGIApp, metrics: HttpMetrics, access_log: AccessLog, on_answer: AnswerHook | None = None
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._log_from = {"off": 1000, "errors": 400, "all": 0}[access_log]
        self._on_answer = on_answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        token = REQUEST_ID.set(rid)
        started = time.perf_counter()
        status = 0
        method: str = scope["method"]  # before a HEAD is routed as GET

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (HEADER, rid.encode())]
                self._answered(scope, method, status, time.perf_counter() - started)
            await send(message)

        try:
            if method == "HEAD":
                await answer_head(self.app, scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        except Exception:
            if status == 0:  # escaped every handler: the server answers 500
                self._answered(scope, method, 500, time.perf_counter() - started)
            raise
        finally:
            REQUEST_ID.reset(token)

    def _answered(self, scope: Scope, method: str, status: int, seconds: float) -> None:
        route = route_of(scope)
        self._metrics.answered(route, method, status, seconds)
        if self._on_answer is not None:
            self._on_answer(scope, route, status)
        if status >= self._log_from:
            log.log(
                logging.WARNING if status >= 500 else logging.INFO,
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "path": cast("dict[str, Any]", scope)["path"][:200],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )
