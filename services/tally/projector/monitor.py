"""The projector's monitoring endpoint on ``SHIPSKIP_PROJECTOR_PORT``: ``/metrics``, ``/healthz``, ``/readyz``.

- ``/healthz``: the process is alive; the position of each partition it folds.
- ``/readyz``: NATS (JetStream answers for the stream) and Postgres reachable: 503 naming what is not.
- ``/metrics``: services/tally/projector/metrics.py, the lag read from the server and the readiness checks run at
  each scrape.
"""

from collections.abc import Callable

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from services.shared.metrics import CONTENT_TYPE, render_registry
from services.shared.monitor_server import Answer, MonitorServer, json_answer
from services.shared.readiness import nats_check, postgres_check, readiness, record_readiness
from services.tally.projector.metrics import ProjectorMetrics


class ProjectorHealth(msgspec.Struct, frozen=True):
    status: str
    positions: dict[str, int]
    """Per partition folded here: the stream sequence folded up to."""


Positions = Callable[[], dict[str, int]]
"""Per partition this process folds: the stream sequence folded up to."""


def projector_monitor(
    metrics: ProjectorMetrics, positions: Positions, nc: NATS, pool: asyncpg.Pool, host: str, port: int
) -> MonitorServer:
    js = nc.jetstream()
    checks = {"nats": nats_check(nc, js), "postgres": postgres_check(pool)}

    async def metrics_route() -> Answer:
        folded = positions()
        for partition, position in folded.items():
            metrics.position.labels(partition).set(position)
        await metrics.read_lag(js, list(folded))
        record_readiness(metrics.readiness, (await readiness(checks))[0])
        return 200, CONTENT_TYPE, render_registry(metrics.registry)

    async def healthz() -> Answer:
        return json_answer(200, ProjectorHealth(status="ok", positions=positions()))

    async def readyz() -> Answer:
        body, status = await readiness(checks)
        return json_answer(status, body)

    return MonitorServer({"/metrics": metrics_route, "/healthz": healthz, "/readyz": readyz}, host, port)
