"""Baseline 1: a bare Litestar app with the same HTTP shape as shipskip and nothing behind it.

``POST /v1/comparisons/{id}/votes`` takes the same msgspec body (``contracts.http.VoteRequest``, decoded by
Litestar) and answers 202 with a ``VoteAccepted``; ``GET /v1/comparisons/{id}/community`` answers a
``ComparisonCommunity`` of the same size as shipskip's, encoded once (as shipskip's read API does). Whatever
shipskip does beyond this (tokens, catalogue, JetStream, the view) is what the ratio against it measures.

Run as ``granian --factory bench.apps.bare:create_app`` (see ``bench.stack``).
"""

from typing import Annotated

import msgspec
from litestar import Litestar, Response, get, post
from litestar.params import Body

from contracts.catalog import decode_catalog
from contracts.http import VoteAccepted, VoteRequest
from infra.stack.bootstrap import DEMO_CATALOG
from services.shared.event_ids import new_event_id
from services.tally.read.figures import comparison_figures

_encoder = msgspec.json.Encoder()


def _community_replies() -> dict[str, bytes]:
    """The demo catalogue's comparisons with plausible counts, as shipskip's read API would encode them."""
    catalog = decode_catalog(DEMO_CATALOG.read_bytes())
    tools = {tool.id: tool for tool in catalog.tools}
    replies = {}
    for comparison in catalog.comparisons:
        left, right = (tools[tool_id] for tool_id in comparison.tools)
        counts = {left.id: (123_456, 65_432), right.id: (98_765, 87_654)}
        figures = comparison_figures(comparison, (left, right), counts, 1_234_567, 10)
        replies[comparison.id] = _encoder.encode(figures)
    return replies


_REPLIES = _community_replies()
_NOT_FOUND = b'{"error":"unknown_comparison","detail":"no such comparison"}'


@post("/v1/comparisons/{comparison_id:str}/votes", status_code=202)
async def cast_vote(comparison_id: str, data: Annotated[VoteRequest, Body()]) -> Response[bytes]:
    accepted = VoteAccepted(status="accepted", event_id=new_event_id())
    return Response(content=_encoder.encode(accepted), status_code=202, media_type="application/json")


@get("/v1/comparisons/{comparison_id:str}/community")
async def community(comparison_id: str) -> Response[bytes]:
    reply = _REPLIES.get(comparison_id)
    if reply is None:
        return Response(content=_NOT_FOUND, status_code=404, media_type="application/json")
    return Response(content=reply, media_type="application/json")


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(content=b'{"status":"ok"}', media_type="application/json")


def create_app() -> Litestar:
    return Litestar(route_handlers=[healthz, cast_vote, community])
