"""The admin HTTP API, under ``/admin`` on the read-API port: status, rebuild, verify, void, dead letters, and
catalogue loads (the rules of ``shipskip catalog load``: services/operators/catalog_loads.py).

Off entirely (no routes at all) unless ``SHIPSKIP_ADMIN_TOKEN`` is set; then every request needs
``Authorization: Bearer <token>``, compared in constant time. Rebuilds and verifications run in the background
in this process; their progress is polled with GET.
"""

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec
import nats.errors
from litestar import Litestar, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from nats.aio.client import Client as NATS

from services.operators.catalog_loads import MAX_FILE_BYTES, LoadRefused, load, parse_catalog, pool_votes
from services.operators.dead_letters import list_dead_letters, retry_dead_letters
from services.operators.moderation import InvalidVoid, void_voter
from services.operators.status import read_status
from services.shared.catalog_fold import CatalogOutOfStep
from services.shared.http import ApiError, decode_body, json_response
from services.shared.jetstream import connect
from services.tally.pools import folding_pool
from services.tally.rebuild.rebuild import Difference, Progress, RebuildRunning, rebuild, verify
from services.tally.settings import TallySettings
from services.tally.store import Projection

log = logging.getLogger(__name__)


class RebuildRequest(msgspec.Struct, forbid_unknown_fields=True):
    comparison_id: str | None = None


class VoidRequest(msgspec.Struct, forbid_unknown_fields=True):
    voter_id: str
    reason: str


class JobView(msgspec.Struct):
    kind: str
    state: str
    """"running", "done" or "failed"."""
    comparison_id: str | None
    done: int
    total: int
    events_per_second: float
    seconds_left: float | None
    phase: str
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Job:
    progress: Progress
    task: asyncio.Task[dict[str, Any]] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    def view(self) -> JobView:
        p = self.progress
        state = "running" if self.task is not None and not self.task.done() else ("failed" if self.error else "done")
        return JobView(
            kind=p.kind,
            state=state,
            comparison_id=p.comparison_id,
            done=p.done,
            total=p.total,
            events_per_second=round(p.rate, 1),
            seconds_left=None if p.seconds_left is None else round(p.seconds_left, 1),
            phase=p.phase,
            result=self.result,
            error=self.error,
        )


@dataclass
class AdminContext:
    settings: TallySettings
    token: bytes
    nc: NATS
    pool: asyncpg.Pool
    jobs: dict[str, Job] = field(default_factory=dict)

    def start_job(self, kind: str, comparison_id: str | None, work: Callable[[Job], Awaitable[dict[str, Any]]]) -> Job:
        current = self.jobs.get(kind)
        if current is not None and current.task is not None and not current.task.done():
            raise ApiError(409, f"{kind}_running", f"a {kind} is already running; poll GET /admin/{kind}")
        job = Job(progress=Progress(kind, comparison_id))

        async def run() -> dict[str, Any]:
            try:
                job.result = await work(job)
            except RebuildRunning as exc:
                job.error = str(exc)
            except Exception as exc:
                log.exception("admin %s failed", kind)
                job.error = f"{type(exc).__name__}: {exc}"
            return job.result or {}

        job.task = asyncio.create_task(run(), name=f"admin-{kind}")
        self.jobs[kind] = job
        return job


def _context(connection: ASGIConnection[Any, Any, Any, Any]) -> AdminContext:
    context: AdminContext = connection.app.state.admin
    return context


def require_token(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    expected = _context(connection).token
    header = connection.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), expected):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <SHIPSKIP_ADMIN_TOKEN>")


_rebuild_decoder = msgspec.json.Decoder(RebuildRequest)
_void_decoder = msgspec.json.Decoder(VoidRequest)


T = TypeVar("T")


async def _decode(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T], empty: T | None = None) -> T:
    body = await request.body()
    if not body.strip() and empty is not None:
        return empty
    return decode_body(body, decoder)


def _differences(position: int, differences: list[Difference]) -> dict[str, Any]:
    return {
        "position": position,
        "identical": not differences,
        "differences": [msgspec.to_builtins(d) for d in differences],
    }


@get("/status")
async def admin_status(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    return json_response(await read_status(context.nc, context.pool))


@post("/rebuild", status_code=202, request_max_body_size=4096)
async def start_rebuild(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    body = await _decode(request, _rebuild_decoder, RebuildRequest())

    async def work(job: Job) -> dict[str, Any]:
        report = await rebuild(
            context.nc,
            context.pool,
            context.settings.servers.database_url,
            ballots_per_client_day=context.settings.ballots_per_client_day,
            comparison_id=body.comparison_id,
            on_progress=lambda progress: setattr(job, "progress", progress),
            memory_ballots=context.settings.rebuild_memory_ballots,
            nats_url=context.settings.servers.nats_url,
        )
        return {"position": report.position, "events": report.events, "seconds": round(report.seconds, 2)}

    return json_response(context.start_job("rebuild", body.comparison_id, work).view(), 202)


@post("/verify", status_code=202, request_max_body_size=4096)
async def start_verify(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    body = await _decode(request, _rebuild_decoder, RebuildRequest())

    async def work(job: Job) -> dict[str, Any]:
        position, differences = await verify(
            context.nc,
            context.pool,
            ballots_per_client_day=context.settings.ballots_per_client_day,
            comparison_id=body.comparison_id,
            on_progress=lambda progress: setattr(job, "progress", progress),
            nats_url=context.settings.servers.nats_url,
        )
        return _differences(position, differences)

    return json_response(context.start_job("verify", body.comparison_id, work).view(), 202)


def _job(request: Request[Any, Any, Any], kind: str) -> Response[bytes]:
    job = _context(request).jobs.get(kind)
    if job is None:
        raise ApiError(404, "no_job", f"no {kind} started by this process; POST /admin/{kind} starts one")
    return json_response(job.view())


# Two handlers, not one on "/{kind}": Litestar matches the static POST paths first and would answer GET with 405.
@get("/rebuild")
async def rebuild_progress(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _job(request, "rebuild")


@get("/verify")
async def verify_result(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _job(request, "verify")


@post("/void", status_code=202, request_max_body_size=4096)
async def admin_void(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    body = await _decode(request, _void_decoder)
    try:
        event = await void_voter(context.nc.jetstream(), body.voter_id, body.reason)
    except InvalidVoid as exc:
        raise ApiError(422, "invalid_void", str(exc)) from None
    return json_response({"status": "accepted", "event_id": event.event_id}, 202)


@get("/dead-letters")
async def admin_dead_letters(request: Request[Any, Any, Any]) -> Response[bytes]:
    return json_response({"dead_letters": await list_dead_letters(_context(request).pool)})


@post("/dead-letters/retry", status_code=200)
async def admin_retry_dead_letters(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    return json_response(
        await retry_dead_letters(context.pool, Projection(context.settings.ballots_per_client_day), context.nc)
    )


def _flag(request: Request[Any, Any, Any], name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(422, "invalid_parameter", f"{name}: true or false, not {value[:20]!r}")
    return value in ("true", "1")


@post("/catalog", status_code=200, request_max_body_size=MAX_FILE_BYTES)
async def admin_load_catalog(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The body is a catalogue file. ``?check=true``: the changes only; ``?force=true``: remove comparisons that
    have votes. 200 with what changed; 422 naming the fault, 409 refused (votes, another load), 503 NATS away."""
    context = _context(request)
    check, force = _flag(request, "check"), _flag(request, "force")
    try:
        catalog = parse_catalog(await request.body())
        nc = context.nc
        outcome = await load(
            nc.jetstream(),
            catalog,
            pool_votes(context.pool),
            max_payload=nc.max_payload,
            replicas=context.settings.servers.stream_replicas,
            check=check,
            force=force,
        )
    except LoadRefused as refused:
        raise ApiError(refused.status, refused.error, str(refused)) from None
    except (nats.errors.Error, OSError, CatalogOutOfStep, msgspec.DecodeError) as exc:
        raise ApiError(503, "nats_unavailable", f"NATS: {type(exc).__name__}: {exc}", retry_after=5) from None
    return json_response(outcome)


def admin_router() -> Router:
    return Router(
        path="/admin",
        guards=[require_token],
        route_handlers=[
            admin_status,
            start_rebuild,
            start_verify,
            rebuild_progress,
            verify_result,
            admin_void,
            admin_dead_letters,
            admin_retry_dead_letters,
            admin_load_catalog,
        ],
        include_in_schema=False,
    )


def admin_lifespan(settings: TallySettings, token: str) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await connect(settings.servers.nats_url, "shipskip-admin")
        # Rebuilds hold one connection for the swap while folding on another, and record progress on a third.
        pool = await folding_pool(settings.servers.database_url, max_size=4)
        app.state.admin = AdminContext(settings=settings, token=token.encode(), nc=nc, pool=pool)
        try:
            yield
        finally:
            for job in app.state.admin.jobs.values():
                if job.task is not None:
                    job.task.cancel()
            await nc.drain()
            await pool.close()

    return lifespan
