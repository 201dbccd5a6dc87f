"""The read API application factory (``granian --factory services.tally.read.app:create_app``).

Every read is answered from the in-memory ``CommunityView`` (services/tally/read/view.py): the figures of a comparison
are pre-encoded with their ETag and sent as is, and the live stream fans each change out to every open page
(services/tally/read/sse.py). Postgres is read only to load or reload the view.
"""

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.enums import ParamType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Parameter, Schema
from litestar.response import Stream
from litestar.types import ASGIApp, ControllerRouterHandler
from nats.aio.client import Client as NATS

from contracts.http import CommunityAsOf, CommunityBatch, ComparisonCommunity, ReadHealth
from contracts.ids import SLUG_PATTERN
from services.operators.admin import admin_lifespan, admin_router
from services.shared.catalog_view import CatalogView
from services.shared.client_address import ClientAddresses
from services.shared.config import settings_or_exit
from services.shared.heap import frozen_after_start
from services.shared.http import EXCEPTION_HANDLERS, ApiError, json_response
from services.shared.jetstream import connect
from services.shared.logs import configure_logging
from services.shared.metric_buffer import MetricBuffer, flushing
from services.shared.metrics import WorkersExposition
from services.shared.metrics_folder import run_folder_of_worker
from services.shared.observed_asgi import HttpMetrics, ObservedApp
from services.shared.openapi import RETRY_AFTER, answers, documented
from services.shared.openapi_ui.pages import schema_pages
from services.shared.ops_port import ops_port
from services.shared.ops_routes import OPS_ROUTES
from services.shared.readiness import Check, nats_check, postgres_check
from services.shared.telemetry_settings import TelemetrySettings
from services.tally.read.catalog_routes import CATALOG_ROUTES
from services.tally.read.history_routes import AS_OF, community_as_of, community_history
from services.tally.read.http_cache import PUBLIC_ORIGINS, request_header
from services.tally.read.metrics import ReadMetrics
from services.tally.read.settings import LiveSettings
from services.tally.read.sse import FiguresBroadcast, close_on_stop_signal
from services.tally.read.view import CommunityView, Rendered
from services.tally.settings import TallySettings

MAX_BATCH = 50
STREAMS_PER_ADDRESS_RETRY_S = 30
"""A page closes in minutes, not seconds: the widget polls meanwhile."""
STREAM_HEADERS = {
    # Every event is news: no cache may keep the stream, and nginx-style proxies must not buffer it.
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
    "Access-Control-Allow-Origin": PUBLIC_ORIGINS.decode(),
}


# The batch reads its repeated query parameter itself, so Litestar documents none: the OpenAPI document is told here.
_BATCH_IDS = Parameter(
    name="comparison_id",
    param_in=ParamType.QUERY,
    required=True,
    style="form",
    explode=True,
    description=f"A comparison id, repeated for each comparison (at most {MAX_BATCH})",
    schema=Schema(
        type=OpenAPIType.ARRAY,
        items=Schema(type=OpenAPIType.STRING, pattern=SLUG_PATTERN, max_length=64),
        min_items=1,
        max_items=MAX_BATCH,
    ),
)


@dataclass
class ReadContext:
    settings: TallySettings
    nc: NATS
    pool: asyncpg.Pool
    catalog: CatalogView
    view: CommunityView
    broadcast: FiguresBroadcast
    addresses: ClientAddresses


def _context(request: Request[Any, Any, Any]) -> ReadContext:
    context: ReadContext = request.app.state.read
    return context


def _client_address(context: ReadContext, request: Request[Any, Any, Any]) -> str | None:
    client = request.scope.get("client")
    forwarded_for = [value.decode("latin-1") for name, value in request.scope["headers"] if name == b"x-forwarded-for"]
    return context.addresses.resolve(client[0] if client else None, forwarded_for)


def _rendered(context: ReadContext, comparison_id: str) -> Rendered:
    rendered = context.view.get(comparison_id)
    if rendered is None:
        raise ApiError(404, "unknown_comparison", f"no comparison {comparison_id[:80]!r}")
    return rendered


@get(
    "/healthz",
    summary="The process is alive; its view's position and open streams",
    responses=answers({200: (ReadHealth, "Alive")}),
)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    return json_response(
        ReadHealth(
            status="ok",
            position=context.view.position,
            reloads=context.view.reloads,
            streams=context.broadcast.clients,
            pid=os.getpid(),
        )
    )


@get(
    "/v1/comparisons/{comparison_id:str}/community",
    summary="Live community figures of one comparison (ETag, If-None-Match -> 304, CDN-cacheable for a second);"
    " with ?as_of=, as they stood then (a CommunityAsOf)",
    operation_class=documented(parameters=[AS_OF]),
    responses={
        **answers({304: (None, "Not modified: the If-None-Match ETag is current")}, 400, 404, 422),
        200: ResponseSpec(
            data_container=ComparisonCommunity | CommunityAsOf,
            description="The live figures, with their ETag (with ?as_of=: a CommunityAsOf)",
            generate_examples=False,
        ),
    },
)
async def community(request: Request[Any, Any, Any], comparison_id: str) -> ASGIApp:
    if request.scope["query_string"]:  # the live figure's path reads no query
        as_of = request.query_params.getall("as_of", [])
        if len(as_of) > 1:
            raise ApiError(422, "invalid_parameter", f"as_of: given {len(as_of)} times; give it at most once")
        if as_of:
            return await community_as_of(request, comparison_id, as_of[0])
    rendered = _rendered(_context(request), comparison_id)
    return rendered.http.answer(request_header(request.scope, b"if-none-match"))


@get(
    "/v1/comparisons/{comparison_id:str}/community/stream",
    summary="Server-Sent Events: the current figures, then every change (id: the position)",
    responses={
        200: ResponseSpec(
            data_container=str,
            media_type="text/event-stream",
            description="The event stream: each data: line is a ComparisonCommunity JSON object",
            generate_examples=False,
        ),
        **answers({}, 400, 404, 429, 503),
    },
    operation_class=documented(headers={429: RETRY_AFTER, 503: RETRY_AFTER}),
)
async def community_stream(request: Request[Any, Any, Any], comparison_id: str) -> Stream:
    context = _context(request)
    _rendered(context, comparison_id)
    broadcast = context.broadcast
    if broadcast.closing:
        raise ApiError(503, "stopping", "this process is stopping; reconnect", retry_after=1)
    address = _client_address(context, request)
    refusal = broadcast.refusal(address)
    if refusal == "process_full":
        raise ApiError(503, "too_many_streams", "this process holds all the streams it can", retry_after=5)
    if refusal == "address_full":
        raise ApiError(
            429,
            "too_many_streams_from_address",
            f"your address holds {broadcast.max_per_address} live streams already; close one, or poll",
            retry_after=STREAMS_PER_ADDRESS_RETRY_S,
        )
    slot = broadcast.admit(address)  # no await since the check: a burst from one address cannot slip past it
    last_event_id = request_header(request.scope, b"last-event-id")
    return Stream(
        broadcast.stream(comparison_id, last_event_id, slot),
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
    )


@get(
    "/v1/community",
    summary="Live community figures of several comparisons (?comparison_id=A&comparison_id=B)",
    operation_class=documented(parameters=[_BATCH_IDS]),
    responses=answers({200: (CommunityBatch, "The figures of each comparison named, once each")}, 400, 404),
)
async def community_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    ids = request.query_params.getall("comparison_id", [])
    if not ids:
        raise ApiError(400, "missing_comparison_id", "name at least one ?comparison_id=")
    if len(ids) > MAX_BATCH:
        raise ApiError(400, "too_many_comparisons", f"at most {MAX_BATCH} comparison_id values per request")
    context = _context(request)
    bodies = [_rendered(context, comparison_id).body for comparison_id in dict.fromkeys(ids)]
    # The CommunityBatch shape, from the bodies encoded already.
    return Response(content=b'{"comparisons":[' + b",".join(bodies) + b"]}", media_type="application/json")


def _nothing() -> None:
    pass


def read_lifespan(
    settings: TallySettings, live: LiveSettings, metrics: ReadMetrics
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        view: CommunityView | None = None

        async def on_reconnect() -> None:
            # Notices sent while we were away are lost (core NATS): read everything again.
            if view is not None:
                view.request_reload("reconnected to NATS")

        nc = await connect(settings.servers.nats, "shipskip-read", reconnected_cb=on_reconnect)
        pool = await asyncpg.create_pool(settings.servers.database_url, min_size=1, max_size=4)
        catalog = CatalogView(nc.jetstream())
        undo_signals: Callable[[], None] = _nothing
        broadcast: FiguresBroadcast | None = None
        try:
            await catalog.start()
            view = CommunityView(pool, catalog, settings.min_ballots, live.resync_s)
            broadcast = FiguresBroadcast(view, live.keepalive_s, live.max_streams, live.max_streams_per_address)
            await view.start(nc)
            undo_signals = close_on_stop_signal(broadcast.close)
            app.state.read = ReadContext(
                settings=settings,
                nc=nc,
                pool=pool,
                catalog=catalog,
                view=view,
                broadcast=broadcast,
                addresses=ClientAddresses(live.trusted_proxies),
            )
            app.state.readiness_checks = {
                "nats": nats_check(nc, nc.jetstream()),
                "postgres": postgres_check(pool),
                "view": view_check(view),
            }
            metrics.start(view, broadcast)
            yield
        finally:
            await metrics.stop()
            undo_signals()
            if broadcast is not None:
                broadcast.close()
            if view is not None:
                await view.stop()
            await catalog.stop()
            await nc.drain()
            await pool.close()

    return lifespan


def create_app(
    settings: TallySettings | None = None, live: LiveSettings | None = None, telemetry: TelemetrySettings | None = None
) -> ASGIApp:
    settings = settings or settings_or_exit(TallySettings.from_env)
    live = live or settings_or_exit(LiveSettings.from_env)
    telemetry = telemetry or settings_or_exit(TelemetrySettings.from_env)
    configure_logging(telemetry, "read")
    metrics_folder = settings_or_exit(run_folder_of_worker)  # made by `shipskip serve` (serve.py)
    buffer = MetricBuffer()
    metrics = ReadMetrics()
    handlers: list[ControllerRouterHandler] = [
        healthz, *CATALOG_ROUTES, community, community_history, community_stream, community_batch, *OPS_ROUTES,
    ]  # fmt: skip
    lifespans = [flushing(buffer), read_lifespan(settings, live, metrics), ops_port("read", telemetry)]
    if settings.admin_token is not None:
        handlers.append(admin_router())
        lifespans.append(admin_lifespan(settings, settings.admin_token))
    lifespans.append(frozen_after_start)  # last: once everything is built
    app = Litestar(
        route_handlers=handlers,
        lifespan=lifespans,
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,  # configure_logging above: JSON lines, request ids
        openapi_config=OpenAPIConfig(title="shipskip tally", version="1", render_plugins=schema_pages()),
        state=State({"exposition": WorkersExposition(metrics_folder, buffer, metrics.sample)}),
    )
    return ObservedApp(app, HttpMetrics(buffer), telemetry.access_log)


def view_check(view: CommunityView) -> Check:
    async def check() -> str | None:
        return None if view.reloads > 0 else "not loaded yet"

    return check
