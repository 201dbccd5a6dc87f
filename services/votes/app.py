"""The votes API application factory (``granian --factory services.votes.app:create_app``)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from services.shared.catalog_view import CatalogView
from services.shared.config import settings_or_exit
from services.shared.http import EXCEPTION_HANDLERS
from services.shared.jetstream import connect, ensure_votes_stream
from services.votes.admission import Gate
from services.votes.ballot_box import BALLOT_MEMORY_S
from services.votes.client_address import ClientAddresses
from services.votes.context import VotesContext
from services.votes.cors import CorsMiddleware
from services.votes.day_keys import SharedDayKeys
from services.votes.identity import Hasher, VoterTokens
from services.votes.publisher import VotePublisher
from services.votes.redis_link import RedisLink
from services.votes.routes import ROUTES
from services.votes.settings import VotesSettings
from services.votes.widget.pages import WIDGET_ROUTES


def create_app(settings: VotesSettings | None = None) -> Litestar:
    settings = settings or settings_or_exit(VotesSettings.from_env)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await connect(settings.servers.nats_url, "shipskip-votes")
        js = nc.jetstream()
        catalog = CatalogView(js)
        redis = RedisLink(
            settings.servers.redis_url, timeout_s=settings.redis_timeout_s, pool_size=settings.redis_pool_size
        )
        try:
            await ensure_votes_stream(js, settings.duplicate_window_s, settings.servers.stream_replicas)
            await catalog.start()
            # Not required to start: without Redis, votes are still taken (see redis_link.py).
            await redis.probe()
            day_keys = SharedDayKeys(redis)
            app.state.votes = VotesContext(
                settings=settings,
                nc=nc,
                catalog=catalog,
                publisher=VotePublisher(nc, js, settings.publish_timeout_s),
                tokens=VoterTokens(settings.token_keys, settings.token_ttl_s),
                hasher=Hasher(settings.hash_key, day_keys),
                redis=redis,
                # Remembered no longer than JetStream dedups the same Nats-Msg-Id, so a replay is stored once.
                gate=Gate(redis, record_ttl_s=int(settings.duplicate_window_s), ballot_ttl_s=BALLOT_MEMORY_S),
                day_keys=day_keys,
                addresses=ClientAddresses(settings.trusted_proxies),
            )
            yield
        finally:
            await catalog.stop()
            # drain: publishes in flight finish before the connection closes.
            await nc.drain()
            await redis.close()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Litestar(
        route_handlers=[*ROUTES, *WIDGET_ROUTES],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(CorsMiddleware, origins=settings.cors_origins)],
        openapi_config=OpenAPIConfig(title="shipskip votes", version="1"),
    )
