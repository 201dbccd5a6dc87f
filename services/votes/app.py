"""The votes API application factory (``granian --factory services.votes.app:create_app``)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.types import ASGIApp

from services.shared.catalog_view import CatalogView
from services.shared.client_address import ClientAddresses
from services.shared.config import settings_or_exit
from services.shared.heap import frozen_after_start
from services.shared.http import EXCEPTION_HANDLERS
from services.shared.jetstream import connect, ensure_votes_stream
from services.shared.logs import configure_logging
from services.shared.metric_buffer import MetricBuffer, flushing
from services.shared.metrics import WorkersExposition
from services.shared.metrics_folder import run_folder_of_worker
from services.shared.observed_asgi import HttpMetrics, ObservedApp
from services.shared.openapi_ui.pages import schema_pages
from services.shared.ops_port import ops_port
from services.shared.ops_routes import OPS_ROUTES
from services.shared.readiness import Check, nats_check
from services.shared.telemetry_settings import TelemetrySettings
from services.votes.admission import Gate
from services.votes.api_doc import DESCRIPTION, VOTER_SCHEMES
from services.votes.ballot_box import BALLOT_MEMORY_S
from services.votes.context import VotesContext
from services.votes.cors import CorsMiddleware
from services.votes.day_keys import SharedDayKeys
from services.votes.identity import Hasher, VoterTokens
from services.votes.metrics import VotesMetrics
from services.votes.publisher import VotePublisher
from services.votes.redis_link import RedisLink
from services.votes.routes import ROUTES
from services.votes.settings import VotesSettings
from services.votes.widget.pages import WIDGET_ROUTES


def create_app(settings: VotesSettings | None = None, telemetry: TelemetrySettings | None = None) -> ASGIApp:
    settings = settings or settings_or_exit(VotesSettings.from_env)

    telemetry = telemetry or settings_or_exit(TelemetrySettings.from_env)
    configure_logging(telemetry, "votes")
    metrics_folder = settings_or_exit(run_folder_of_worker)  # made by `shipskip serve` (serve.py)
    buffer = MetricBuffer()
    votes_metrics = VotesMetrics(buffer)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await connect(settings.servers.nats, "shipskip-votes")
        js = nc.jetstream()
        catalog = CatalogView(js)
        redis = RedisLink(
            settings.servers.redis_url,
            timeout_s=settings.redis_timeout_s,
            pool_size=settings.redis_pool_size,
            ca_file=settings.servers.redis_ca_file,
        )
        publisher = VotePublisher(settings.publish_timeout_s, votes_metrics.published)
        try:
            await ensure_votes_stream(js, settings.duplicate_window_s, settings.servers.stream_replicas)
            await catalog.start()
            # Not required to start: without Redis, votes are still taken (see redis_link.py).
            await redis.probe()
            day_keys = SharedDayKeys(redis)
            await publisher.start(settings.servers.nats, "shipskip-votes-publishes")
            app.state.votes = VotesContext(
                settings=settings,
                nc=nc,
                catalog=catalog,
                publisher=publisher,
                tokens=VoterTokens(settings.token_keys, settings.token_ttl_s, settings.token_clock_skew_s),
                hasher=Hasher(settings.hash_key, day_keys),
                redis=redis,
                # Remembered no longer than JetStream dedups the same Nats-Msg-Id, so a replay is stored once.
                # A forget's marker outlives every token of the voter (services/votes/forgetting.py).
                gate=Gate(
                    redis,
                    record_ttl_s=int(settings.duplicate_window_s),
                    ballot_ttl_s=BALLOT_MEMORY_S,
                    forgotten_ttl_s=settings.token_ttl_s,
                ),
                day_keys=day_keys,
                addresses=ClientAddresses(settings.trusted_proxies),
            )
            nats = publishes_check(nats_check(nc, js), publisher)
            app.state.readiness_checks = {"nats": nats, "redis": redis_check(redis)}
            # Without Redis votes are still taken (limits per process): degraded, not unready.
            app.state.readiness_tolerated = frozenset({"redis"})
            yield
        finally:
            await catalog.stop()
            # Publishes in flight are answered (or due) before the connections close.
            await publisher.close()
            await nc.drain()
            await redis.close()

    app = Litestar(
        route_handlers=[*ROUTES, *OPS_ROUTES, *WIDGET_ROUTES],
        # frozen last: after everything is built; the ops port (/metrics) once the readiness checks exist
        lifespan=[flushing(buffer), lifespan, ops_port("votes", telemetry), frozen_after_start],
        exception_handlers=EXCEPTION_HANDLERS,
        logging_config=None,  # configure_logging above: JSON lines, request ids
        middleware=[DefineMiddleware(CorsMiddleware, origins=settings.cors_origins)],
        openapi_config=OpenAPIConfig(
            title="shipskip votes",
            version="1",
            description=DESCRIPTION,
            components=Components(security_schemes=VOTER_SCHEMES),
            render_plugins=schema_pages(),
        ),
        state=State({"exposition": WorkersExposition(metrics_folder, buffer)}),
    )
    return ObservedApp(app, HttpMetrics(buffer), telemetry.access_log, votes_metrics.answered)


def publishes_check(nats: Check, publisher: VotePublisher) -> Check:
    """NATS answers the service's connection, and the publisher's own is up too (see publisher.py)."""

    async def check() -> str | None:
        problem = await nats()
        return problem or (None if publisher.connected else "the vote publishes' connection is down, reconnecting")

    return check


def redis_check(redis: RedisLink) -> Check:
    """Redis answers a ping. While it does not, votes are still taken, with limits counted per process."""

    async def check() -> str | None:
        await redis.probe()  # at once while known to be down: its watcher pings until it is back
        return None if redis.up else "unreachable: rate limits are counted per process, idempotency records not kept"

    return check
