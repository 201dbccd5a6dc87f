"""The votes API's routes: issue voter tokens, cast and retract votes, forget a voter.

The vote POST carries the load, and is answered by its route's own middleware (``AnswerVote``, the innermost, so
CORS and every app middleware wrap it as any handler): Litestar still routes it (path, path parameters, 405 and
OPTIONS) and documents it from its handler, but does not run that handler. For a handler Litestar would make a
``Request`` of its own, look for a cached response, run the handler through its parameter model inside an
``AsyncExitStack`` and then convert what it returns: about 16 µs of a vote's 150 (5 to 23 in five runs of
``python -m bench.votes_cpu`` alternated with a handler returning ``answer_vote``, on a loaded machine).
Litestar's exception middleware around a route is private (``litestar._asgi.utils``), so ``answer_vote`` answers
its own refusals with the service's exception handlers (services/shared/http.py, ``error_answer``): the answers
Litestar would give, CORS headers included (tests/integration/test_abuse_votes.py compares every kind of answer
with those of the former routing).
"""

import math
import os
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie
from litestar.types import ASGIApp, Receive, Scope, Send

from contracts.events import Origin, Verdict, VoteCast, VoteRetracted
from contracts.http import (
    MAX_VOTE_BODY_BYTES,
    VoteAccepted,
    VoteRequest,
    VoterForgottenReply,
    VoterIssued,
    VotesHealth,
)
from services.shared.event_ids import new_event_id
from services.shared.http import ApiError, decode_body, duplicate_key, error_answer, json_response
from services.shared.openapi import RATE_LIMIT, RATE_LIMITED, RETRY_AFTER, answers, documented, json_body
from services.shared.request_body import read_body
from services.votes.api_doc import CLEAR_VOTER_COOKIE, IDEMPOTENCY_KEY, SET_VOTER_COOKIE, VOTER
from services.votes.ballot_box import Submission, admit_new_voter, request_hash, submit
from services.votes.body_deadline import BodyTimeout
from services.votes.context import VotesContext
from services.votes.forgetting import forget_voter
from services.votes.identity import TokenRefused, utc_day
from services.votes.replies import Reply
from services.votes.request_parts import (
    IDEMPOTENCY_HEADER,
    MAX_IDEMPOTENCY_KEY,
    VOTER_COOKIE,
    VOTER_HEADER,
    RequestHeaders,
    cookie_values,
)

_VOTER_HEADER = VOTER_HEADER.lower().encode()
_IDEMPOTENCY_HEADER = IDEMPOTENCY_HEADER.lower().encode()
_JSON = "application/json"

VOTE_KEYS = tuple(name.encode() for name in VoteRequest.__struct_fields__)

# Built once: strict decoding (no "3" -> 3 coercion, unknown fields refused) of the raw body.
_vote_decoder = msgspec.json.Decoder(VoteRequest)


# The bodies and headers are read raw (see _json_body), so Litestar documents neither: the OpenAPI document is
# told here, with the headers of the answers.
_VOTED = {
    202: (VoteAccepted, "Accepted: stored in the vote stream"),
    200: (VoteAccepted, "Unchanged: the voter's current verdict already, or a repeated Idempotency-Key"),
}
_VOTE_ANSWER_HEADERS = {
    202: RATE_LIMIT,
    200: RATE_LIMIT,
    422: RATE_LIMIT,  # with a reused Idempotency-Key
    429: RATE_LIMITED,
    503: {**RETRY_AFTER, **RATE_LIMIT},  # the vote could not be stored
}
_VOTE_OPERATION = documented(
    body=json_body(VoteRequest, "The verdict on one tool of the comparison; no other fields"),
    parameters=[IDEMPOTENCY_KEY],
    headers=_VOTE_ANSWER_HEADERS,
)


class AnswerVote:
    """The vote POST's route middleware: ``answer_vote`` answers every request (see the module's docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        del app  # Litestar's app for the handler below: not called

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer_vote(scope, receive, send)


def _context(request: Request[Any, Any, Any]) -> VotesContext:
    context: VotesContext = request.app.state.votes
    return context


@post(
    "/v1/voters",
    status_code=201,
    summary="Issue a voter token (also set as a cookie)",
    responses=answers({201: (VoterIssued, "The new voter token")}, 403, 429),
    operation_class=documented(headers={201: {**SET_VOTER_COOKIE, **RATE_LIMIT}, 429: RATE_LIMITED}),
)
async def issue_voter(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    address = _client_address(context, request, RequestHeaders(request.scope["headers"]))
    headers = await admit_new_voter(context, address)
    token = context.tokens.issue()
    response = json_response(VoterIssued(voter_token=token), 201, headers)
    response.set_cookie(_voter_cookie(context, token, context.settings.token_ttl_s))
    return response


def _voter_cookie(context: VotesContext, value: str, max_age: int) -> Cookie:
    secure = context.settings.cookie_secure
    return Cookie(
        key=VOTER_COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=secure,
        # A widget embedded on another site only gets its cookie back with SameSite=None, which needs Secure; the
        # cookie that clears it (Max-Age=0) needs the same, or a browser drops it from a cross-site answer.
        samesite="none" if secure else "lax",
    )


@delete(
    "/v1/voters/me",
    status_code=202,
    summary="Forget my votes: take every ballot of this voter out of the tallies, and retire the token",
    description=(
        "Stores a `voter.forgotten` event: the projection takes every ballot of the voter out of the tallies (counted"
        " and uncounted) and erases their verdicts, as a rebuild does. The token then votes no more (401"
        " `voter_forgotten`) and the cookie is cleared. Idempotent: a second call with the same token is 202 too"
        " (it stores another forget, which changes nothing). Rate limited as votes are (per voter and address)."
    ),
    security=VOTER,
    operation_class=documented(
        headers={
            202: {**CLEAR_VOTER_COOKIE, **RATE_LIMIT},
            429: RATE_LIMITED,
            503: {**RETRY_AFTER, **RATE_LIMIT},
            504: {**RETRY_AFTER, **RATE_LIMIT},
        }
    ),
    responses=answers({202: (VoterForgottenReply, "The forget is stored")}, 401, 403, 429, 503, 504),
)
async def forget_me(request: Request[Any, Any, Any]) -> Response[bytes]:
    context = _context(request)
    headers = RequestHeaders(request.scope["headers"])
    voter = _voter(context, headers)
    address = _client_address(context, request, headers)
    event_id, answer_headers = await forget_voter(context, context.hasher.voter_id(voter), address)
    response = json_response(VoterForgottenReply(status="forgotten", event_id=event_id), 202, answer_headers)
    response.set_cookie(_voter_cookie(context, "", 0))
    return response


@post(
    "/v1/comparisons/{comparison_id:str}/votes",
    status_code=202,
    request_max_body_size=MAX_VOTE_BODY_BYTES,
    summary="Cast or change a vote",
    security=VOTER,
    operation_class=_VOTE_OPERATION,
    responses=answers(_VOTED, 400, 401, 403, 404, 408, 413, 415, 422, 429, 503, 504),
    middleware=[AnswerVote],
)
async def cast_vote() -> ASGIApp:
    """Documents the route; its middleware answers every request. Without it, Litestar would run this answer."""
    return answer_vote


async def answer_vote(scope: Scope, receive: Receive, send: Send) -> None:
    """The vote POST: the reply, or the answer of the service's exception handlers to its refusal."""
    request: Request[Any, Any, Any] = Request(scope, receive)
    try:
        reply = await cast(request, request.path_params["comparison_id"])
    except Exception as exc:
        await error_answer(request, exc).to_asgi_response(app=None, request=request)(scope, receive, send)
        return
    await reply.send(send)


async def cast(request: Request[Any, Any, Any], comparison_id: str) -> Reply:
    """Cast or change a vote: the answer, or an ApiError."""
    context = _context(request)
    headers = RequestHeaders(request.scope["headers"])
    voter = _voter(context, headers)
    tools = _comparison_tools(context, comparison_id)
    body = await _json_body(context, request, headers)
    vote = _decode_vote(body)
    if vote.tool_id not in tools:
        raise _unknown_tool(vote.tool_id, comparison_id)
    return await _submit(context, request, headers, voter, comparison_id, vote.tool_id, vote.verdict, body)


@delete(
    "/v1/comparisons/{comparison_id:str}/votes/{tool_id:str}",
    status_code=202,
    summary="Retract a vote",
    security=VOTER,
    operation_class=documented(parameters=[IDEMPOTENCY_KEY], headers=_VOTE_ANSWER_HEADERS),
    responses=answers(_VOTED, 400, 401, 403, 404, 422, 429, 503, 504),
)
async def retract_vote(request: Request[Any, Any, Any], comparison_id: str, tool_id: str) -> Response[bytes]:
    context = _context(request)
    headers = RequestHeaders(request.scope["headers"])
    voter = _voter(context, headers)
    tools = _comparison_tools(context, comparison_id)
    if tool_id not in tools:
        raise _unknown_tool(tool_id, comparison_id)
    return (await _submit(context, request, headers, voter, comparison_id, tool_id, None, b"")).response()


def _voter(context: VotesContext, headers: RequestHeaders) -> bytes:
    if headers.voter_repeated:
        raise ApiError(401, "voter_token_repeated", f"the request holds different {VOTER_HEADER} headers; send one")
    token = headers.get(_VOTER_HEADER) or _cookie_token(headers)
    if not token:
        raise ApiError(
            401, "voter_token_missing", "send the voter token from POST /v1/voters (cookie or X-Voter-Token)"
        )
    try:
        return context.tokens.verify(token)
    except TokenRefused as exc:
        raise ApiError(401, "voter_token_refused", str(exc)) from None


def _cookie_token(headers: RequestHeaders) -> str | None:
    if not headers.cookies:
        return None
    tokens = set(cookie_values(headers.cookies, VOTER_COOKIE))
    if len(tokens) > 1:
        # Which one would a proxy, a cache or the browser's next request use? Not ours to guess.
        raise ApiError(
            401,
            "voter_cookie_repeated",
            f"the request holds {len(tokens)} different {VOTER_COOKIE} cookies; send one voter token",
        )
    return next(iter(tokens), None)


def _comparison_tools(context: VotesContext, comparison_id: str) -> tuple[str, str]:
    found = context.catalog.comparison(comparison_id)
    if found is None:
        raise ApiError(404, "unknown_comparison", f"no open comparison {comparison_id[:80]!r}")
    left, right = found[1]
    return left.id, right.id


def _unknown_tool(tool_id: str, comparison_id: str) -> ApiError:
    # Ids are cut: a refusal must not echo kilobytes of hostile input back.
    return ApiError(404, "unknown_tool", f"tool {tool_id[:80]!r} is not in comparison {comparison_id[:80]!r}")


async def _json_body(context: VotesContext, request: Request[Any, Any, Any], headers: RequestHeaders) -> bytes:
    # The plain header as it comes nearly always; anything else as Request.content_type parses it.
    if headers.get(b"content-type") != _JSON and request.content_type[0] != _JSON:
        raise ApiError(415, "unsupported_media_type", "send the vote as application/json")
    deadlines = context.body_deadlines
    try:
        # 413 past the route's limit, as Litestar's; the deadline stops a body that stalls (slow-loris).
        limit = request.route_handler.resolve_request_max_body_size() or math.inf  # the route's, as Litestar reads it
        return await deadlines.within(read_body(request.receive, headers.get(b"content-length"), limit))
    except BodyTimeout:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {deadlines.timeout_s:.0f} s") from None


def _decode_vote(body: bytes) -> VoteRequest:
    vote = decode_body(body, _vote_decoder, invalid="invalid_vote")
    duplicate = duplicate_key(body, VOTE_KEYS)
    if duplicate is not None:
        # msgspec keeps the last of repeated keys; a proxy that reads the first would see another vote.
        raise ApiError(422, "invalid_vote", f"the key {duplicate[:40]!r} appears twice")
    return vote


def _idempotency_key(headers: RequestHeaders) -> str | None:
    key = headers.get(_IDEMPOTENCY_HEADER)
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "invalid_idempotency_key", f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return key


def _client_address(context: VotesContext, request: Request[Any, Any, Any], headers: RequestHeaders) -> str | None:
    client = request.scope.get("client")
    return context.addresses.resolve(client[0] if client else None, headers.forwarded_for)


async def _submit(
    context: VotesContext,
    request: Request[Any, Any, Any],
    headers: RequestHeaders,
    voter: bytes,
    comparison_id: str,
    tool_id: str,
    verdict: Verdict | None,
    body: bytes,
) -> Reply:
    key = _idempotency_key(headers)
    address = _client_address(context, request, headers)
    now = datetime.now(UTC)
    await context.day_keys.ensure(utc_day(now))  # the shared key for today's address hashes; cached
    widget = headers.get(b"origin")
    origin = Origin(
        widget=widget[:200] if widget else None,
        client=context.hasher.client(address, now) if address else None,
    )
    voter_id = context.hasher.voter_id(voter)
    event: VoteCast | VoteRetracted
    if verdict is None:
        event = VoteRetracted(
            event_id=new_event_id(), comparison_id=comparison_id, tool_id=tool_id, voter_id=voter_id, at=now,
            origin=origin,
        )  # fmt: skip
    else:
        event = VoteCast(
            event_id=new_event_id(), comparison_id=comparison_id, tool_id=tool_id, verdict=verdict,
            voter_id=voter_id, at=now, origin=origin,
        )  # fmt: skip
    # The hash tells a retry from another request under the same key: only needed with a key.
    scope = request.scope
    hashed = request_hash(scope["method"], scope.get("root_path", "") + scope["path"], body) if key else ""
    submission = Submission(event, key, hashed, address)
    return await submit(context, submission)


@get(
    "/healthz",
    summary="The process is alive",
    responses=answers({200: (VotesHealth, "Alive; whether its rate limits are shared through Redis")}),
)
async def healthz(request: Request[Any, Any, Any]) -> Response[bytes]:
    # "limits": whether this copy shares its limits through Redis, or counts them alone (Redis unreachable).
    shared = _context(request).redis.up
    return json_response({"status": "ok", "limits": "shared" if shared else "per-process", "pid": os.getpid()})


ROUTES = [healthz, issue_voter, forget_me, cast_vote, retract_vote]
