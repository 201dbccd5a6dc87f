"""The HTTP services' ops port: ``/metrics``, ``/healthz`` and ``/readyz`` on a port of their own, off the public one.

The public ports are for visitors (and the load balancer's probes); metrics say how busy the service is and which
errors it answers, and belong to the operators' scraper only. So each HTTP service serves ``/metrics`` on its ops
port (``SHIPSKIP_VOTES_METRICS_PORT``, ``SHIPSKIP_TALLY_METRICS_PORT``, on ``SHIPSKIP_METRICS_HOST``) and no
longer on its public one, as the projector always did (``SHIPSKIP_PROJECTOR_PORT``).

Every granian worker starts one ops server in its lifespan (``ops_port``), all on the same port with
``SO_REUSEPORT``, so whichever worker the kernel hands a scrape answers it, with every worker's values (the run's
multiprocess files, services/shared/metrics.py). ``/healthz`` and ``/readyz`` are the app's own answers, asked
in-process through ASGI, so both ports answer alike; the public port keeps them for load balancers. Each scrape
runs the readiness checks and records them as ``shipskip_readiness{check}`` (services/shared/readiness.py).
"""

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal, cast

from litestar import Litestar
from litestar.types import ASGIApp, Message, ReceiveMessage, Scope

from services.shared.config import ConfigError
from services.shared.metrics import CONTENT_TYPE, WorkersExposition, build_info
from services.shared.monitor_server import Answer, MonitorServer
from services.shared.readiness import Check, readiness, readiness_gauge, record_readiness
from services.shared.telemetry_settings import TelemetrySettings

log = logging.getLogger(__name__)

HttpService = Literal["votes", "read"]

OPS_PORT_VARIABLES: Mapping[str, str] = {
    "votes": "SHIPSKIP_VOTES_METRICS_PORT",
    "read": "SHIPSKIP_TALLY_METRICS_PORT",
    "projector": "SHIPSKIP_PROJECTOR_PORT",
}
"""The variable naming each process's ops port (the projector's serves the same three paths)."""


def ops_port_of(service: str, telemetry: TelemetrySettings) -> int:
    ports = {
        "votes": telemetry.votes_metrics_port,
        "read": telemetry.tally_metrics_port,
        "projector": telemetry.projector_port,
    }
    return ports[service]


def check_ops_port(service: HttpService, telemetry: TelemetrySettings, public_port: int, workers: int) -> None:
    """Refuse an ops port that cannot work: the public port itself (both would take each other's connections:
    granian opens its port with SO_REUSEPORT too), or 0 with several workers (each would get a port of its own)."""
    variable, port = OPS_PORT_VARIABLES[service], ops_port_of(service, telemetry)
    if port == public_port:
        raise ConfigError(f"{variable}={port} is the {service} API's public port too; give metrics a port of their own")
    if port == 0 and workers > 1:
        raise ConfigError(f"{variable}=0 (any free port) works with one worker only: each of {workers} picks its own")


def ops_port(
    service: HttpService, telemetry: TelemetrySettings
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A Litestar lifespan serving the worker's ops port; listed after the lifespan that sets the app's
    ``readiness_checks`` (its state also holds ``exposition``, the /metrics text)."""
    variable, port, host = OPS_PORT_VARIABLES[service], ops_port_of(service, telemetry), telemetry.metrics_host
    # Created in the run's multiprocess files (PROMETHEUS_MULTIPROC_DIR, set before the worker started).
    gauge = readiness_gauge(None)
    build_info(service, None)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        exposition: WorkersExposition = app.state.exposition

        async def metrics() -> Answer:
            checks: Mapping[str, Check] = app.state.readiness_checks
            body, _ = await readiness(checks, getattr(app.state, "readiness_tolerated", frozenset()))
            record_readiness(gauge, body)
            return 200, CONTENT_TYPE, exposition.render()

        async def healthz() -> Answer:
            return await asgi_get(app, "/healthz")

        async def readyz() -> Answer:
            return await asgi_get(app, "/readyz")

        server = MonitorServer(
            {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}, host, port, reuse_port=True
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"{variable}={port}: cannot listen on {host} ({exc})") from None
        log.info("%s metrics and health on %s:%d (/metrics, /healthz, /readyz)", service, host, server.port)
        try:
            yield
        finally:
            await server.stop()

    return lifespan


async def asgi_get(app: ASGIApp, path: str) -> Answer:
    """The app's answer to ``GET path``, asked in-process (the ASGI interface any server uses)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"ops-port")],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    status, content_type, body = 500, "application/json", bytearray()
    requested = False

    async def receive() -> ReceiveMessage:
        nonlocal requested
        if requested:
            return {"type": "http.disconnect"}
        requested = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, content_type
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    content_type = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(cast("Scope", scope), receive, send)
    return status, content_type, bytes(body)
