"""``/readyz``: whether a process's servers answer (and whatever else it needs, like the read API's view).

Each check is a coroutine that returns None when all is well, or a short sentence saying what is wrong; every
check gets ``CHECK_TIMEOUT_S`` and they run at once, so a probe never waits longer than that. The answer is 200
with ``{"status": "ready", "checks": {"nats": "ok", ...}}`` or 503 with ``"status": "not_ready"``, each failed
check saying why, and ``problems`` naming them one sentence each. A process may tolerate a check: its failure
alone gives 200 ``"status": "degraded"`` (the votes API without Redis still takes votes, with limits per process,
so a load balancer routing on /readyz must keep sending it votes).
"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Gauge

from contracts.http import Readiness
from contracts.subjects import VOTES_STREAM

CHECK_TIMEOUT_S = 1.0

Check = Callable[[], Awaitable[str | None]]
"""None when fine, else what is wrong."""


async def _run(check: Check) -> str | None:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:.0f} s"
    except Exception as exc:  # a probe must report, never fail
        return f"{type(exc).__name__}: {exc}"[:200]


async def readiness(checks: Mapping[str, Check], tolerated: frozenset[str] = frozenset()) -> tuple[Readiness, int]:
    """The /readyz body and its status: 200 ready, 200 degraded (only tolerated checks failed), or 503."""
    results = await asyncio.gather(*(_run(check) for check in checks.values()))
    outcome = dict(zip(checks, results, strict=True))
    failed = [name for name, problem in outcome.items() if problem is not None]
    blocking = [name for name in failed if name not in tolerated]
    body = Readiness(
        status="not_ready" if blocking else "degraded" if failed else "ready",
        checks={name: problem or "ok" for name, problem in outcome.items()},
        problems=[f"{name}: {outcome[name]}" for name in failed],
    )
    return body, 503 if blocking else 200


def readiness_gauge(registry: CollectorRegistry | None) -> Gauge:
    """``shipskip_readiness{check}``: 1 while a check passes, 0 while it fails, as of the last scrape (which runs
    them). Of several workers, the one that answered the scrape counts (``livemostrecent``)."""
    return Gauge(
        "shipskip_readiness",
        "1 while the readiness check passes, 0 while it fails (the checks run at each scrape), by check",
        ["check"],
        multiprocess_mode="livemostrecent",
        registry=registry,
    )


def record_readiness(gauge: Gauge, body: Readiness) -> None:
    for name, outcome in body.checks.items():
        gauge.labels(name).set(1.0 if outcome == "ok" else 0.0)


def nats_check(nc: NATS, js: JetStreamContext) -> Check:
    """Connected, and JetStream answers for the VOTES stream."""

    async def check() -> str | None:
        if not nc.is_connected:
            return "not connected (reconnecting)"
        try:
            await js.stream_info(VOTES_STREAM)
        except (nats.errors.Error, OSError) as exc:
            return f"JetStream does not answer for {VOTES_STREAM}: {type(exc).__name__}"
        return None

    return check


def postgres_check(pool: asyncpg.Pool) -> Check:
    async def check() -> str | None:
        try:
            async with pool.acquire(timeout=CHECK_TIMEOUT_S) as conn:
                await conn.fetchval("select 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
            return f"unreachable: {type(exc).__name__}"
        return None

    return check
