"""The read API application factory (``granian --factory services.tally.api:create_app``).

Every read is answered from the in-memory ``CommunityView``; Postgres is only read to refresh it.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response, get
from litestar.openapi import OpenAPIConfig
from nats.aio.client import Client as NATS

from contracts.http import CommunityBatch, ComparisonEntry, ComparisonList, PanelFigures, ToolEntry
from services.shared.catalog_view import CatalogView
from services.shared.http import EXCEPTION_HANDLERS, ApiError, json_response
from services.shared.jetstream import connect
from services.tally.figures import share_pct
from services.tally.settings import TallySettings
from services.tally.view import CommunityView

MAX_BATCH = 50


@dataclass
class ReadContext:
    settings: TallySettings
    nc: NATS
    catalog: CatalogView
    view: CommunityView


def _context(request: Request[Any, Any, Any]) -> ReadContext:
    context: ReadContext = request.app.state.read
    return context


@get("/healthz", summary="The process is alive")
async def healthz() -> Response[bytes]:
    return json_response({"status": "ok"})


@get("/v1/comparisons", summary="The open comparisons and their tools")
async def list_comparisons(request: Request[Any, Any, Any]) -> Response[bytes]:
    catalog = _context(request).catalog
    entries = []
    for comparison in catalog.catalog.comparisons:
        found = catalog.comparison(comparison.id)
        assert found is not None
        tools = [
            ToolEntry(
                id=tool.id,
                name=tool.name,
                pitch=tool.pitch,
                entry=tool.entry,
                panel=PanelFigures(
                    ship=tool.panel.ship,
                    skip=tool.panel.skip,
                    ship_pct=share_pct(tool.panel.ship, tool.panel.ship + tool.panel.skip),
                ),
            )
            for tool in found[1]
        ]
        entries.append(ComparisonEntry(id=comparison.id, title=comparison.title, tools=tools))
    return json_response(ComparisonList(comparisons=entries))


@get("/v1/comparisons/{comparison_id:str}/community", summary="Live community figures of one comparison")
async def community(request: Request[Any, Any, Any], comparison_id: str) -> Response[bytes]:
    encoded = _context(request).view.encoded.get(comparison_id)
    if encoded is None:
        raise ApiError(404, "unknown_comparison", f"no comparison {comparison_id[:80]!r}")
    return Response(content=encoded, media_type="application/json")


@get(
    "/v1/community",
    summary="Live community figures of several comparisons (?comparison_id=A&comparison_id=B)",
)
async def community_batch(request: Request[Any, Any, Any]) -> Response[bytes]:
    ids = request.query_params.getall("comparison_id", [])
    if not ids:
        raise ApiError(400, "missing_comparison_id", "name at least one ?comparison_id=")
    if len(ids) > MAX_BATCH:
        raise ApiError(400, "too_many_comparisons", f"at most {MAX_BATCH} comparison_id values per request")
    view = _context(request).view
    unknown = [i for i in ids if i not in view.figures]
    if unknown:
        raise ApiError(404, "unknown_comparison", f"no comparison {unknown[0][:80]!r}")
    return json_response(CommunityBatch(comparisons=[view.figures[i] for i in dict.fromkeys(ids)]))


def create_app(settings: TallySettings | None = None) -> Litestar:
    settings = settings or TallySettings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        view: CommunityView | None = None

        async def on_reconnect() -> None:
            if view is not None:
                view.mark_all_stale()

        nc = await connect(settings.servers.nats_url, "shipskip-read", reconnected_cb=on_reconnect)
        pool = await asyncpg.create_pool(settings.servers.database_url, min_size=1, max_size=4)
        catalog = CatalogView(nc.jetstream())
        try:
            await catalog.start()
            view = CommunityView(pool, catalog, settings.min_ballots)
            await view.start(nc)
            app.state.read = ReadContext(settings=settings, nc=nc, catalog=catalog, view=view)
            yield
        finally:
            if view is not None:
                await view.stop()
            await catalog.stop()
            await nc.drain()
            await pool.close()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Litestar(
        route_handlers=[healthz, list_comparisons, community, community_batch],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="shipskip tally", version="1"),
    )
