"""The admin HTTP API, under ``/admin`` on the read-API port: status, rebuild, verify, void, voters, dead letters,
and catalogue loads (the rules of ``shipskip catalog load``: services/operators/catalog_loads.py).

Off entirely (no routes at all) unless ``SHIPSKIP_ADMIN_TOKEN`` is set; then every request needs
``Authorization: Bearer <token>``, compared in constant time; an address with too many failed tries is refused
for a while (services/operators/auth_failures.py). Rebuilds and verifications run in the background
in this process; their progress is polled with GET.
"""

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import msgspec
import nats.errors
from litestar import Litestar, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from nats.aio.client import Client as NATS

from services.operators.auth_failures import FailedLogins
from services.operators.catalog_loads import MAX_FILE_BYTES, LoadRefused, load, parse_catalog, pool_votes
from services.operators.dead_letters import (
    InvalidDiscard,
    NoSuchDeadLetter,
    discard_dead_letter,
    list_dead_letters,
    list_discarded,
    retry_dead_letters,
    show_dead_letter,
)
from services.operators.failures import OUTAGES, describe_outage
from services.operators.known import InvalidId, UnknownId, require_comparison
from services.operators.moderation import InvalidVoid, UnknownVoter, void_voter
from services.operators.status import read_status
from services.operators.voters import (
    DEFAULT_LIMIT,
    DEFAULT_SINCE,
    InvalidQuery,
    find_voters,
    parse_since,
)
from services.shared.catalog_fold import CatalogOutOfStep
from services.shared.http import ApiError, decode_body, json_response
from services.shared.jetstream import connect
from services.shared.request_body import request_body
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
    force: bool = False
    """Void a voter who has no ballots yet (else 404 unknown_voter)."""


class RetryRequest(msgspec.Struct, forbid_unknown_fields=True):
    seqs: list[int] | None = None
    """The letters to retry (None: every one)."""


class DiscardRequest(msgspec.Struct, forbid_unknown_fields=True):
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
    failed_logins: FailedLogins
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
    context = _context(connection)
    failures = context.failed_logins
    client = connection.client
    address = client.host if client else "unknown"
    wait_s = failures.retry_after(address)
    if wait_s is not None:
        raise ApiError(
            429,
            "admin_auth_rate_limited",
            f"{failures.limit} failed admin logins from this address within {failures.window_s:.0f} s;"
            f" try again in {wait_s} s",
            retry_after=wait_s,
        )
    header = connection.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), context.token):
        failures.failed(address)
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <SHIPSKIP_ADMIN_TOKEN>")


_rebuild_decoder = msgspec.json.Decoder(RebuildRequest)
_void_decoder = msgspec.json.Decoder(VoidRequest)
_retry_decoder = msgspec.json.Decoder(RetryRequest)
_discard_decoder = msgspec.json.Decoder(DiscardRequest)


@contextmanager
def _answered() -> Iterator[None]:
    """The operators' errors as the API answers them: unknown ids 404, bad input 422, a server down 503."""
    try:
        yield
    except UnknownId as exc:
        raise ApiError(404, f"unknown_{exc.kind}", str(exc)) from None
    except UnknownVoter as exc:
        raise ApiError(404, "unknown_voter", f'{exc}; send "force": true to void them before they vote') from None
    except NoSuchDeadLetter as exc:
        raise ApiError(404, "unknown_dead_letter", str(exc)) from None
    except InvalidVoid as exc:
        raise ApiError(422, "invalid_void", str(exc)) from None
    except InvalidDiscard as exc:
        raise ApiError(422, "invalid_discard", str(exc)) from None
    except InvalidId as exc:
        raise ApiError(422, "invalid_id", str(exc)) from None
    except InvalidQuery as exc:
        raise ApiError(422, "invalid_query", str(exc)) from None
    except OUTAGES as exc:
        raise ApiError(503, "unavailable", describe_outage(exc)) from None


T = TypeVar("T")


async def _decode(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[T], empty: T | None = None) -> T:
    body = await request_body(request)
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
    with _answered():
        return json_response(await read_status(context.nc, context.pool))


@post("/rebuild", status_code=202, request_max_body_size=4096)
async def start_rebuild(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    body = await _decode(request, _rebuild_decoder, RebuildRequest())
    await _require_comparison(context, body.comparison_id)

    async def work(job: Job) -> dict[str, Any]:
        report = await rebuild(
            context.nc,
            context.pool,
            context.settings.servers.database_url,
            nats=context.settings.servers.nats,
            ballots_per_client_day=context.settings.ballots_per_client_day,
            comparison_id=body.comparison_id,
            on_progress=lambda progress: setattr(job, "progress", progress),
            memory_ballots=context.settings.rebuild_memory_ballots,
        )
        return {"position": report.position, "events": report.events, "seconds": round(report.seconds, 2)}

    return json_response(context.start_job("rebuild", body.comparison_id, work).view(), 202)


@post("/verify", status_code=202, request_max_body_size=4096)
async def start_verify(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    body = await _decode(request, _rebuild_decoder, RebuildRequest())
    await _require_comparison(context, body.comparison_id)

    async def work(job: Job) -> dict[str, Any]:
        position, differences = await verify(
            context.nc,
            context.pool,
            ballots_per_client_day=context.settings.ballots_per_client_day,
            comparison_id=body.comparison_id,
            on_progress=lambda progress: setattr(job, "progress", progress),
        )
        return _differences(position, differences)

    return json_response(context.start_job("verify", body.comparison_id, work).view(), 202)


async def _require_comparison(context: AdminContext, comparison_id: str | None) -> None:
    if comparison_id is not None:
        with _answered():
            await require_comparison(context.nc.jetstream(), context.pool, comparison_id)


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
    """202 with the void appended; 200 ``already_voided`` (nothing appended); 404 for a voter with no ballots."""
    context = _context(request)
    body = await _decode(request, _void_decoder)
    with _answered():
        outcome = await void_voter(context.nc.jetstream(), context.pool, body.voter_id, body.reason, force=body.force)
    answer = msgspec.to_builtins(outcome)
    if not outcome.voided:
        return json_response({"status": "already_voided", **answer})
    return json_response({"status": "accepted", **answer}, 202)


_VOTERS_QUERY = frozenset({"comparison", "tool", "since", "limit"})


@get("/voters")
async def admin_voters(request: Request[Any, Any, Any]) -> Response[bytes]:
    """GET /admin/voters?comparison=C[&tool=T][&since=1h][&limit=N]: as ``shipskip voters --json``."""
    context = _context(request)
    query = request.query_params
    unknown = sorted(set(query.keys()) - _VOTERS_QUERY)
    if unknown:
        raise ApiError(
            422, "invalid_query", f"unknown parameter(s) {', '.join(unknown)}; known: {sorted(_VOTERS_QUERY)}"
        )
    comparison_id = query.get("comparison")
    if not comparison_id:
        raise ApiError(422, "invalid_query", "name the comparison: ?comparison=ID")
    tool_id = query.get("tool") or None
    limit_text = query.get("limit") or str(DEFAULT_LIMIT)
    with _answered():
        since = parse_since(query.get("since") or DEFAULT_SINCE)
        if not limit_text.isdigit():
            raise InvalidQuery(f"the limit must be a whole number, not {limit_text[:20]!r}")
        limit = int(limit_text)
        js = context.nc.jetstream()
        report = await find_voters(js, context.pool, comparison_id, tool_id=tool_id, since=since, limit=limit)
    return json_response(report)


@get("/dead-letters")
async def admin_dead_letters(request: Request[Any, Any, Any]) -> Response[bytes]:
    """GET /admin/dead-letters[?discarded=true]: the first 100 (the latest 100 discarded), and the total."""
    pool = _context(request).pool
    with _answered():
        if request.query_params.get("discarded") in ("1", "true", "yes"):
            discarded, total = await list_discarded(pool)
            return json_response({"discarded": discarded, "total": total})
        letters, total = await list_dead_letters(pool)
    return json_response({"dead_letters": letters, "total": total})


@get("/dead-letters/{seq:int}")
async def admin_dead_letter(request: Request[Any, Any, Any], seq: int) -> Response[bytes]:
    context = _context(request)
    with _answered():
        return json_response(await show_dead_letter(context.pool, context.nc, seq))


@post("/dead-letters/retry", status_code=200, request_max_body_size=65536)
async def admin_retry_dead_letters(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Body (optional): {"seqs": [...]}; 200 with what was applied and what is still dead, and why."""
    context = _context(request)
    body = await _decode(request, _retry_decoder, RetryRequest())
    projection = Projection(context.settings.ballots_per_client_day)
    with _answered():
        return json_response(await retry_dead_letters(context.pool, projection, context.nc, body.seqs))


@post("/dead-letters/{seq:int}/discard", status_code=200, request_max_body_size=4096)
async def admin_discard_dead_letter(request: Request[Any, Any, Any], seq: int) -> Response[bytes]:
    """Body: {"reason": "..."}; 200 with the discarded letter as the audit table keeps it."""
    context = _context(request)
    body = await _decode(request, _discard_decoder)
    with _answered():
        return json_response(await discard_dead_letter(context.pool, seq, body.reason))


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
        catalog = parse_catalog(await request_body(request))
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
            admin_voters,
            admin_dead_letters,
            admin_dead_letter,
            admin_retry_dead_letters,
            admin_discard_dead_letter,
            admin_load_catalog,
        ],
        include_in_schema=False,
    )


def admin_lifespan(settings: TallySettings, token: str) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        nc = await connect(settings.servers.nats, "shipskip-admin")
        # Rebuilds hold one connection for the swap while folding on another, and record progress on a third.
        pool = await folding_pool(settings.servers.database_url, max_size=4)
        failed_logins = FailedLogins(settings.admin_auth_failures, settings.admin_auth_window_s)
        app.state.admin = AdminContext(
            settings=settings, token=token.encode(), nc=nc, pool=pool, failed_logins=failed_logins
        )
        try:
            yield
        finally:
            for job in app.state.admin.jobs.values():
                if job.task is not None:
                    job.task.cancel()
            await nc.drain()
            await pool.close()

    return lifespan
