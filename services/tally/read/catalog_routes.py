"""The read API's catalogue routes: comparisons a page at a time, and one tool with the comparisons it is in.

Pages are in comparison-id order and the cursor is the last id of a page (opaque to clients), so paging through
while the catalogue changes returns every comparison that existed throughout exactly once: nothing shifts the
ids after a given one. Each answer's ETag is the catalogue revision and the query, known before any body is built,
so a 304 costs a bisection and a hash. Parameters are read here rather than by Litestar, so that a bad one is a 422
naming it (Litestar's own validation answers 400); the OpenAPI document is told about them below.
"""

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, get
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIType, Operation, Parameter, Schema
from litestar.types import ASGIApp

from contracts.catalog import Tool
from contracts.http import (
    ComparisonEntry,
    ComparisonList,
    ErrorBody,
    PanelFigures,
    QuoteEntry,
    ToolDetail,
    ToolEntry,
    ToolPage,
)
from contracts.ids import SLUG_PATTERN
from services.shared.catalog_view import CatalogView, Resolved
from services.shared.http import ApiError
from services.shared.openapi import answers
from services.tally.read.figures import share_pct
from services.tally.read.http_cache import PUBLIC_ORIGINS, Answer, entity_tag, none_match, request_header

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_CATEGORY = 100
CACHE_CONTROL = b"public, max-age=10, stale-while-revalidate=300"
"""The catalogue changes seldom; a CDN may serve a page for a few seconds, then revalidate (a 304 mostly)."""

_CURSOR_PREFIX = "c1:"
_SLUG = re.compile(SLUG_PATTERN)
_encoder = msgspec.json.Encoder()


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        text = ""
    last_id = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not _SLUG.fullmatch(last_id):
        raise ApiError(422, "invalid_parameter", "cursor: not a cursor this API gave out (pass next_cursor as is)")
    return last_id


def _one(request: Request[Any, Any, Any], name: str) -> str | None:
    values = request.query_params.getall(name, [])
    if len(values) > 1:
        raise ApiError(422, "invalid_parameter", f"{name}: given {len(values)} times; give it at most once")
    return values[0] if values else None


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    limit = int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "invalid_parameter", f"limit: {text[:20]!r} is not a whole number from 1 to {MAX_LIMIT}")
    return limit


def _category(text: str | None) -> str | None:
    if text is not None and not 1 <= len(text) <= MAX_CATEGORY:
        raise ApiError(422, "invalid_parameter", f"category: give a category name of 1 to {MAX_CATEGORY} characters")
    return text


def _known_tool(catalog: CatalogView, tool_id: str) -> Tool:
    tool = catalog.tool(tool_id)
    if tool is None:
        raise ApiError(404, "unknown_tool", f"no tool {tool_id[:80]!r}")
    return tool


def _panel(tool: Tool) -> PanelFigures:
    panel = tool.panel
    return PanelFigures(ship=panel.ship, skip=panel.skip, ship_pct=share_pct(panel.ship, panel.ship + panel.skip))


def _entry(found: Resolved) -> ComparisonEntry:
    comparison, tools = found
    return ComparisonEntry(
        id=comparison.id,
        title=comparison.title,
        tools=[
            ToolEntry(
                id=tool.id,
                name=tool.name,
                pitch=tool.pitch,
                entry=tool.entry,
                panel=_panel(tool),
                category=tool.category,
            )
            for tool in tools
        ],
    )


def _answer(request: Request[Any, Any, Any], revision: int, key: str, body: Callable[[], msgspec.Struct]) -> Answer:
    """200 with the body, or 304 when the client holds this revision's answer to the same query."""
    etag = entity_tag(revision, key.encode()).encode()
    validators = [(b"etag", etag), (b"cache-control", CACHE_CONTROL), (b"access-control-allow-origin", PUBLIC_ORIGINS)]
    if_none_match = request_header(request.scope, b"if-none-match")
    if if_none_match is not None and none_match(if_none_match, etag.decode()):
        return Answer(304, validators)
    data = _encoder.encode(body())
    return Answer(
        200, [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *validators], data
    )


def _query(name: str, description: str, schema: Schema) -> Parameter:
    return Parameter(name=name, param_in=ParamType.QUERY, required=False, description=description, schema=schema)


_LIST_PARAMETERS = [
    _query(
        "limit",
        f"Comparisons per page (default {DEFAULT_LIMIT})",
        Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_LIMIT),
    ),
    _query("cursor", "The next_cursor of the previous page", Schema(type=OpenAPIType.STRING)),
    _query(
        "tool_id",
        "Only the comparisons of this tool",
        Schema(type=OpenAPIType.STRING, pattern=SLUG_PATTERN, max_length=64),
    ),
    _query(
        "category",
        "Only the comparisons with a tool in this category",
        Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_CATEGORY),
    ),
]


@dataclass
class _ListOperation(Operation):
    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or []), *_LIST_PARAMETERS]


_INVALID = ResponseSpec(
    data_container=ErrorBody, description="A bad query parameter, named in the detail", generate_examples=False
)


def catalog_view(request: Request[Any, Any, Any]) -> CatalogView:
    view: CatalogView = request.app.state.read.catalog
    return view


@get(
    "/v1/comparisons",
    summary="The open comparisons, a page at a time in id order (cursor, limit, tool_id, category; ETag -> 304)",
    operation_class=_ListOperation,
    responses={
        **answers(
            {200: (ComparisonList, "One page"), 304: (None, "Not modified: the If-None-Match ETag is current")}, 404
        ),
        422: _INVALID,
    },
)
async def list_comparisons(request: Request[Any, Any, Any]) -> ASGIApp:
    catalog = catalog_view(request)
    limit = _limit(_one(request, "limit"))
    cursor = _one(request, "cursor")
    after = decode_cursor(cursor) if cursor is not None else None
    tool_id = _one(request, "tool_id")
    category = _category(_one(request, "category"))
    if tool_id is not None:
        _known_tool(catalog, tool_id)

    def body() -> ComparisonList:
        found, more = catalog.page(after, limit, tool_id, category)
        next_cursor = encode_cursor(found[-1][0].id) if more and found else None
        return ComparisonList(comparisons=[_entry(f) for f in found], next_cursor=next_cursor, revision=revision)

    revision = catalog.revision
    return _answer(request, revision, f"list|{after}|{limit}|{tool_id}|{category}", body)


@get(
    "/v1/tools/{tool_id:str}",
    summary="One tool (summary and reviewer quotes) and the first page of the comparisons it is in (ETag -> 304)",
    responses=answers(
        {200: (ToolPage, "The tool"), 304: (None, "Not modified: the If-None-Match ETag is current")}, 404
    ),
)
async def tool_page(request: Request[Any, Any, Any], tool_id: str) -> ASGIApp:
    catalog = catalog_view(request)
    tool = _known_tool(catalog, tool_id)
    revision = catalog.revision

    def body() -> ToolPage:
        found, more = catalog.page(None, DEFAULT_LIMIT, tool_id)
        return ToolPage(
            tool=ToolDetail(
                id=tool.id,
                name=tool.name,
                category=tool.category,
                pitch=tool.pitch,
                entry=tool.entry,
                summary=tool.summary,
                panel=_panel(tool),
                quotes=[QuoteEntry(verdict=quote.verdict, text=quote.text) for quote in tool.quotes],
            ),
            comparisons=[_entry(f) for f in found],
            comparison_count=catalog.comparisons_of(tool_id),
            next_cursor=encode_cursor(found[-1][0].id) if more and found else None,
            revision=revision,
        )

    return _answer(request, revision, f"tool|{tool_id}", body)


CATALOG_ROUTES = [list_comparisons, tool_page]
