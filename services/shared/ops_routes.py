"""``/readyz``, the same on both HTTP services (``/healthz`` is each service's own).

The app keeps what it needs in its state: ``readiness_checks`` (set by the lifespan, once the connections they test
exist). ``/metrics`` is served on each service's ops port only, with both again (services/shared/ops_port.py).
"""

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get

from contracts.http import Readiness
from services.shared.http import json_response
from services.shared.openapi import answers
from services.shared.readiness import Check, readiness


@get(
    "/readyz",
    summary="Ready to serve: its servers answer (and, for the read API, its view is loaded)",
    responses=answers(
        {
            200: (Readiness, "Ready: every check passed (degraded: only a check this process can do without failed)"),
            503: (Readiness, "Not ready: each failed check says what is wrong"),
        }
    ),
)
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    checks: Mapping[str, Check] = request.app.state.readiness_checks
    tolerated: frozenset[str] = getattr(request.app.state, "readiness_tolerated", frozenset())
    body, status = await readiness(checks, tolerated)
    return json_response(body, status, {"Cache-Control": "no-store"})


OPS_ROUTES = [readyz]
