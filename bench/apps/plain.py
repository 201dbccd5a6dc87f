"""Baseline 2: the vote endpoint built the plain way, one Postgres transaction per vote.

The same HTTP shape and the same checks as shipskip's votes API (voter token, catalogue, strict body), but
instead of appending an event it runs one transaction per vote: read the voter's ballot (``for update``), upsert
it, and add the change to a counter row per tool. The read answers the same ``ComparisonCommunity`` JSON from
a ``select`` of the counter rows on every request. Tables live in the schema ``bench_plain``.

Run as ``granian --factory bench.apps.plain:create_app`` with ``SHIPSKIP_DATABASE_URL``,
``SHIPSKIP_TOKEN_KEYS`` and ``SHIPSKIP_HASH_KEY`` set (see ``bench.stack``); ``BENCH_PLAIN_POOL`` sets the
connection pool's size.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post

from contracts.catalog import Comparison, Tool, decode_catalog
from contracts.http import VoteAccepted, VoteRequest
from infra.stack.bootstrap import DEMO_CATALOG
from services.shared.event_ids import new_event_id
from services.tally.read.figures import comparison_figures
from services.votes.identity import Hasher, TokenRefused, VoterTokens

SCHEMA_SQL = """
create schema if not exists bench_plain;
create table if not exists bench_plain.ballots (
    comparison_id text not null,
    tool_id       text not null,
    voter_id      text not null,
    verdict       text not null,
    primary key (comparison_id, tool_id, voter_id)
);
create table if not exists bench_plain.counters (
    comparison_id text not null,
    tool_id       text not null,
    ship          bigint not null default 0,
    skip          bigint not null default 0,
    primary key (comparison_id, tool_id)
);
"""

_SELECT_BALLOT = (
    "select verdict from bench_plain.ballots where comparison_id = $1 and tool_id = $2 and voter_id = $3 for update"
)
_UPSERT_BALLOT = (
    "insert into bench_plain.ballots (comparison_id, tool_id, voter_id, verdict) values ($1, $2, $3, $4)"
    " on conflict (comparison_id, tool_id, voter_id) do update set verdict = excluded.verdict"
)
_ADD_TO_COUNTER = (
    "insert into bench_plain.counters as c (comparison_id, tool_id, ship, skip) values ($1, $2, $3, $4)"
    " on conflict (comparison_id, tool_id) do update set ship = c.ship + excluded.ship, skip = c.skip + excluded.skip"
)
_SELECT_COUNTERS = "select tool_id, ship, skip from bench_plain.counters where comparison_id = $1"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(VoteRequest)


def _error(status: int, error: str) -> Response[bytes]:
    return Response(
        content=_encoder.encode({"error": error, "detail": error}), status_code=status, media_type="application/json"
    )


class Plain:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        keys = [key.strip().encode() for key in os.environ["SHIPSKIP_TOKEN_KEYS"].split(",") if key.strip()]
        self.tokens = VoterTokens(keys, 365 * 86400)
        self.hasher = Hasher(os.environ["SHIPSKIP_HASH_KEY"].split(",")[0].strip().encode())
        catalog = decode_catalog(DEMO_CATALOG.read_bytes())
        tools = {tool.id: tool for tool in catalog.tools}
        self.comparisons: dict[str, tuple[Comparison, tuple[Tool, Tool]]] = {
            c.id: (c, (tools[c.tools[0]], tools[c.tools[1]])) for c in catalog.comparisons
        }


def _plain(request: Request[Any, Any, Any]) -> Plain:
    plain: Plain = request.app.state.plain
    return plain


@post("/v1/comparisons/{comparison_id:str}/votes", status_code=202)
async def cast_vote(request: Request[Any, Any, Any], comparison_id: str) -> Response[bytes]:
    plain = _plain(request)
    token = request.headers.get("x-voter-token")
    if not token:
        return _error(401, "voter_token_missing")
    try:
        voter_id = plain.hasher.voter_id(plain.tokens.verify(token))
    except TokenRefused:
        return _error(401, "voter_token_refused")
    found = plain.comparisons.get(comparison_id)
    if found is None:
        return _error(404, "unknown_comparison")
    try:
        vote = _decoder.decode(await request.body())
    except msgspec.DecodeError:
        return _error(422, "invalid_vote")
    if vote.tool_id not in (found[1][0].id, found[1][1].id):
        return _error(404, "unknown_tool")
    async with plain.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval(_SELECT_BALLOT, comparison_id, vote.tool_id, voter_id)
        if before != vote.verdict:
            await conn.execute(_UPSERT_BALLOT, comparison_id, vote.tool_id, voter_id, vote.verdict)
            ship = (vote.verdict == "ship") - (before == "ship")
            skip = (vote.verdict == "skip") - (before == "skip")
            await conn.execute(_ADD_TO_COUNTER, comparison_id, vote.tool_id, ship, skip)
    accepted = VoteAccepted(status="accepted", event_id=new_event_id())
    return Response(content=_encoder.encode(accepted), status_code=202, media_type="application/json")


@get("/v1/comparisons/{comparison_id:str}/community")
async def community(request: Request[Any, Any, Any], comparison_id: str) -> Response[bytes]:
    plain = _plain(request)
    found = plain.comparisons.get(comparison_id)
    if found is None:
        return _error(404, "unknown_comparison")
    async with plain.pool.acquire() as conn:
        rows = await conn.fetch(_SELECT_COUNTERS, comparison_id)
    counts = {row[0]: (int(row[1]), int(row[2])) for row in rows}
    figures = comparison_figures(found[0], found[1], counts, 0, 10)
    return Response(content=_encoder.encode(figures), media_type="application/json")


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(content=b'{"status":"ok"}', media_type="application/json")


def create_app() -> Litestar:
    database_url = os.environ["SHIPSKIP_DATABASE_URL"]
    pool_size = int(os.environ.get("BENCH_PLAIN_POOL", "16"))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(SCHEMA_SQL)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(database_url, min_size=pool_size, max_size=pool_size)
        try:
            app.state.plain = Plain(pool)
            yield
        finally:
            await pool.close()

    return Litestar(route_handlers=[healthz, cast_vote, community], lifespan=[lifespan])
