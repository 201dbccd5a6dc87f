"""The votes API application factory (``granian --factory services.votes.app:create_app``)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from services.shared.catalog_view import CatalogView
from services.shared.http import EXCEPTION_HANDLERS
from services.shared.jetstream import connect, ensure_votes_stream
from services.votes.context import VotesContext
from services.votes.identity import Hasher, VoterTokens
from services.votes.publisher import VotePublisher
from services.votes.routes import ROUTES
from services.votes.settings import VotesSettings


def create_app(settings: VotesSettings | None = None) -> Litestar:
    settings = settings or VotesSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await connect(settings.servers.nats_url, "shipskip-votes")
        js = nc.jetstream()
        catalog = CatalogView(js)
        try:
            await ensure_votes_stream(js, settings.duplicate_window_s)
            await catalog.start()
            app.state.votes = VotesContext(
                settings=settings,
                nc=nc,
                catalog=catalog,
                publisher=VotePublisher(nc, js, settings.publish_timeout_s),
                tokens=VoterTokens(settings.token_keys, settings.token_ttl_s),
                hasher=Hasher(settings.hash_key),
            )
            yield
        finally:
            await catalog.stop()
            # drain: publishes in flight finish before the connection closes.
            await nc.drain()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Litestar(
        route_handlers=ROUTES,
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(title="shipskip votes", version="1"),
    )
