"""The votes API's routes: issue voter tokens, cast and retract votes."""

import hashlib
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie

from contracts.events import Event, Origin, VoteCast, VoteRetracted
from contracts.http import MAX_VOTE_BODY_BYTES, VoteAccepted, VoteRequest, VoterIssued
from services.shared.event_ids import new_event_id
from services.shared.http import ApiError, json_response
from services.votes.context import VotesContext
from services.votes.identity import TokenRefused
from services.votes.publisher import StreamUnavailable

VOTER_COOKIE = "shipskip_voter"
VOTER_HEADER = "x-voter-token"
IDEMPOTENCY_HEADER = "idempotency-key"

# Built once: strict decoding (no "3" -> 3 coercion, unknown fields refused) of the raw body.
_vote_decoder = msgspec.json.Decoder(VoteRequest)


def _context(request: Request[Any, Any, Any]) -> VotesContext:
    context: VotesContext = request.app.state.votes
    return context


@post("/v1/voters", status_code=201, summary="Issue a voter token (also set as a cookie)")
async def issue_voter(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    token = context.tokens.issue()
    settings = context.settings
    cookie = Cookie(
        key=VOTER_COOKIE,
        value=token,
        max_age=settings.token_ttl_s,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        # A widget embedded on another site only gets its cookie back with SameSite=None, which needs Secure.
        samesite="none" if settings.cookie_secure else "lax",
    )
    response = json_response(VoterIssued(voter_token=token), 201)
    response.set_cookie(cookie)
    return response


@post(
    "/v1/comparisons/{comparison_id:str}/votes",
    status_code=202,
    request_max_body_size=MAX_VOTE_BODY_BYTES,
    summary="Cast or change a vote",
)
async def cast_vote(request: Request[Any, Any, Any], comparison_id: str) -> Response[bytes]:
    context = _context(request)
    voter = _voter(context, request)
    tools = _comparison_tools(context, comparison_id)
    vote = await _decode_vote(request)
    if vote.tool_id not in tools:
        raise ApiError(404, "unknown_tool", f"tool {vote.tool_id!r} is not in comparison {comparison_id!r}")
    now = datetime.now(UTC)
    event = VoteCast(
        event_id=new_event_id(),
        comparison_id=comparison_id,
        tool_id=vote.tool_id,
        verdict=vote.verdict,
        voter_id=context.hasher.voter_id(voter),
        at=now,
        origin=_origin(context, request, now),
    )
    return await _append(context, request, event)


@delete(
    "/v1/comparisons/{comparison_id:str}/votes/{tool_id:str}",
    status_code=202,
    summary="Retract a vote",
)
async def retract_vote(request: Request[Any, Any, Any], comparison_id: str, tool_id: str) -> Response[bytes]:
    context = _context(request)
    voter = _voter(context, request)
    tools = _comparison_tools(context, comparison_id)
    if tool_id not in tools:
        raise ApiError(404, "unknown_tool", f"tool {tool_id!r} is not in comparison {comparison_id!r}")
    now = datetime.now(UTC)
    event = VoteRetracted(
        event_id=new_event_id(),
        comparison_id=comparison_id,
        tool_id=tool_id,
        voter_id=context.hasher.voter_id(voter),
        at=now,
        origin=_origin(context, request, now),
    )
    return await _append(context, request, event)


def _voter(context: VotesContext, request: Request[Any, Any, Any]) -> bytes:
    token = request.headers.get(VOTER_HEADER) or request.cookies.get(VOTER_COOKIE)
    if not token:
        raise ApiError(
            401, "voter_token_missing", "send the voter token from POST /v1/voters (cookie or X-Voter-Token)"
        )
    try:
        return context.tokens.verify(token)
    except TokenRefused as exc:
        raise ApiError(401, "voter_token_refused", str(exc)) from None


def _comparison_tools(context: VotesContext, comparison_id: str) -> tuple[str, str]:
    found = context.catalog.comparison(comparison_id)
    if found is None:
        raise ApiError(404, "unknown_comparison", f"no open comparison {comparison_id[:80]!r}")
    left, right = found[1]
    return left.id, right.id


async def _decode_vote(request: Request[Any, Any, Any]) -> VoteRequest:
    media_type, _ = request.content_type
    if media_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the vote as application/json")
    body = await request.body()  # Litestar answers 413 past request_max_body_size
    try:
        return _vote_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise ApiError(422, "invalid_vote", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None


def _origin(context: VotesContext, request: Request[Any, Any, Any], now: datetime) -> Origin:
    widget = request.headers.get("origin")
    client = request.client.host if request.client else None
    return Origin(
        widget=widget[:200] if widget else None,
        client=context.hasher.client(client, now) if client else None,
    )


def _message_id(request: Request[Any, Any, Any], event: Event) -> str:
    """The JetStream dedup key: the client's Idempotency-Key scoped to the voter, else the event id."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return event.event_id
    if not 1 <= len(key) <= 255:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
    # Scoped to the voter, so two voters who happen to pick the same key never swallow each other's votes.
    return hashlib.sha256(f"{event.voter_id}\x00{key}".encode()).hexdigest()


async def _append(context: VotesContext, request: Request[Any, Any, Any], event: Event) -> Response[bytes]:
    msg_id = _message_id(request, event)
    try:
        await context.publisher.publish(event, msg_id)
    except StreamUnavailable as exc:
        raise ApiError(503, "stream_unavailable", str(exc), retry_after=1) from None
    return json_response(VoteAccepted(status="accepted", event_id=event.event_id), 202)


@get("/healthz", summary="The process is alive")
async def healthz() -> Response[bytes]:
    return json_response({"status": "ok"})


ROUTES = [healthz, issue_voter, cast_vote, retract_vote]
