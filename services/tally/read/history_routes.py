"""The history of a comparison's community figures: ``/history`` (series of points) and ``/community?as_of=``.

Both read the history projection in Postgres per request (services/tally/read/history.py); the answer's ETag names
its bytes. A range that ends before now is closed and may be cached for an hour; one holding the open bucket (or
an ``as_of`` in the current minute) is cached like the live figure.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, get
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Operation, Parameter, Schema
from litestar.types import ASGIApp

from contracts.catalog import Comparison, Tool
from contracts.http import CommunityAsOf, ComparisonHistory, ErrorBody, HistoryPoint, ToolHistory
from services.shared.http import ApiError
from services.shared.openapi import answers
from services.tally.history import minute_of, time_of
from services.tally.read.figures import preferred, share_pct, tool_figures
from services.tally.read.history import MAX_POINTS, BadQuery, parse_time, read_as_of, read_series, window
from services.tally.read.http_cache import CACHE_CONTROL, CLOSED_CACHE_CONTROL, json_answer, request_header

_encoder = msgspec.json.Encoder()

CLOSED_AFTER_MINUTES = 5
"""A bucket is closed (cached for an hour) once it ended this long ago: events reach the projection within
seconds of their time when it is healthy, so none is still on its way into a closed bucket."""


def _one(request: Request[Any, Any, Any], name: str) -> str | None:
    values = request.query_params.getall(name, [])
    if len(values) > 1:
        raise ApiError(422, "invalid_parameter", f"{name}: given {len(values)} times; give it at most once")
    return values[0] if values else None


def _comparison(request: Request[Any, Any, Any], comparison_id: str) -> tuple[Comparison, tuple[Tool, Tool]]:
    found = request.app.state.read.catalog.comparison(comparison_id)
    if found is None:
        raise ApiError(404, "unknown_comparison", f"no comparison {comparison_id[:80]!r}")
    comparison, tools = found
    return comparison, tools


def _query(name: str, description: str, schema: Schema) -> Parameter:
    return Parameter(name=name, param_in=ParamType.QUERY, required=False, description=description, schema=schema)


_TIME = Schema(type=OpenAPIType.STRING, description="RFC 3339 time with an offset, or a date (YYYY-MM-DD, UTC)")


@dataclass
class _HistoryOperation(Operation):
    def __post_init__(self) -> None:
        self.parameters = [
            *(self.parameters or []),
            _query("bucket", "hour or day (default day)", Schema(type=OpenAPIType.STRING, enum=["hour", "day"])),
            _query("from", "The first bucket holds this time (default: 30 buckets before to)", _TIME),
            _query("to", "The last bucket holds this time; a date, the whole day (default: now)", _TIME),
        ]


_INVALID = ResponseSpec(
    data_container=ErrorBody, description="A bad query parameter, named in the detail", generate_examples=False
)


@get(
    "/v1/comparisons/{comparison_id:str}/history",
    summary=f"Each tool's community figures at the end of each hour or day (at most {MAX_POINTS} points; ETag -> 304)",
    operation_class=_HistoryOperation,
    responses={
        **answers(
            {200: (ComparisonHistory, "The series"), 304: (None, "Not modified: the If-None-Match ETag is current")},
            404,
        ),
        422: _INVALID,
    },
)
async def community_history(request: Request[Any, Any, Any], comparison_id: str) -> ASGIApp:
    comparison, tools = _comparison(request, comparison_id)
    now = datetime.now(UTC)
    try:
        win = window(_one(request, "bucket"), _one(request, "from"), _one(request, "to"), now, len(tools))
    except BadQuery as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    context = request.app.state.read
    async with context.pool.acquire() as conn:
        series = await read_series(conn, comparison.id, [tool.id for tool in tools], win)
    min_ballots: int = context.settings.min_ballots
    closed_until = (minute_of(now) - CLOSED_AFTER_MINUTES) // win.size * win.size
    body = ComparisonHistory(
        comparison_id=comparison.id,
        title=comparison.title,
        bucket=win.bucket,  # type: ignore[arg-type]  # checked by window()
        start=time_of(win.first),
        end=time_of(win.end),
        closed_until=time_of(closed_until),
        min_ballots=min_ballots,
        tools=[
            ToolHistory(
                tool_id=tool.id,
                name=tool.name,
                points=[
                    HistoryPoint(
                        end=end,
                        ship=ship,
                        skip=skip,
                        votes=ship + skip,
                        ship_pct=share_pct(ship, ship + skip) if ship + skip >= min_ballots else None,
                    )
                    for end, ship, skip in series[tool.id]
                ],
            )
            for tool in tools
        ],
    )
    cache_control = CLOSED_CACHE_CONTROL if win.end <= closed_until else CACHE_CONTROL
    return json_answer(_encoder.encode(body), cache_control, request_header(request.scope, b"if-none-match"))


AS_OF = _query(
    "as_of",
    "The figures as they stood at this time, to the minute (RFC 3339 with an offset); absent: the live figures",
    Schema(type=OpenAPIType.STRING),
)


async def community_as_of(request: Request[Any, Any, Any], comparison_id: str, text: str) -> ASGIApp:
    """``/community?as_of=``: the figures counted from the changes stamped before the minute of ``text``."""
    comparison, tools = _comparison(request, comparison_id)
    try:
        at = parse_time("as_of", text)
    except BadQuery as exc:
        raise ApiError(422, "invalid_parameter", str(exc)) from None
    now = datetime.now(UTC)
    if at > now:
        raise ApiError(422, "invalid_parameter", "as_of: in the future; the live figures are at /community")
    minute = minute_of(at)
    context = request.app.state.read
    async with context.pool.acquire() as conn:
        counts = await read_as_of(conn, comparison.id, minute)
    min_ballots: int = context.settings.min_ballots
    left, right = (tool_figures(tool, *counts.get(tool.id, (0, 0)), min_ballots) for tool in tools)
    body = CommunityAsOf(
        comparison_id=comparison.id,
        title=comparison.title,
        as_of=time_of(minute),
        min_ballots=min_ballots,
        tools=[left, right],
        preferred_tool_id=preferred(left, right),
    )
    cache_control = CLOSED_CACHE_CONTROL if minute <= minute_of(now) - CLOSED_AFTER_MINUTES else CACHE_CONTROL
    return json_answer(_encoder.encode(body), cache_control, request_header(request.scope, b"if-none-match"))
