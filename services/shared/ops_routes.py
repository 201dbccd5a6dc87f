"""``/metrics`` and ``/readyz``, the same on both HTTP services (``/healthz`` is each service's own).

The app keeps what they need in its state: ``exposition`` (set by the factory) and ``readiness_checks`` (set by
the lifespan, once the connections they test exist).
"""

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from contracts.http import Readiness
from services.shared.http import json_response
from services.shared.metrics import CONTENT_TYPE, WorkersExposition
from services.shared.openapi import answers
from services.shared.readiness import Check, readiness


@get(
    "/metrics",
    summary="Prometheus metrics of this service (every worker's, added up)",
    responses={
        200: ResponseSpec(
            data_container=str,
            media_type="text/plain",
            description="The Prometheus text format (version 0.0.4)",
            generate_examples=False,
        )
    },
)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    exposition: WorkersExposition = request.app.state.exposition
    return Response(content=exposition.render(), media_type=CONTENT_TYPE)


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


OPS_ROUTES = [metrics, readyz]
