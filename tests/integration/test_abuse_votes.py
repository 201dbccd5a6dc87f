"""Voter identity, idempotent retries, unchanged ballots and cross-origin use, through a real votes process."""

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import pytest

from contracts.events import VoteCast, encode_event
from infra.stack.processes import ServiceProcess
from infra.stack.servers import ServerAddresses
from services.votes.identity import VoterTokens
from tests.support import (
    flush_redis,
    random_key,
    reset_servers,
    send_vote,
    service_env,
    start_votes_service,
    stream_seq,
    vote_events,
)
from tests.support import new_voter as new_token

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
OTHER_TOOL = "llama-4-scout-fine-tuning-toolkit"
SITE = "https://widgets.example.com"
PARTNER = "https://partner.example.org"
STRANGER = "https://evil.example.net"


@pytest.fixture(scope="module")
def votes(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    asyncio.run(reset_servers(servers))
    asyncio.run(flush_redis(servers))
    process = start_votes_service(
        servers,
        tmp_path_factory.mktemp("votes"),
        SHIPSKIP_RATE_LIMITS="on",
        SHIPSKIP_CORS_ORIGINS=f"{SITE},{PARTNER}",
        SHIPSKIP_COOKIE_SECURE="on",
        SHIPSKIP_TOKEN_TTL_DAYS="1",
        SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS="1000/1h,1000",
        SHIPSKIP_LIMIT_VOTES_PER_ADDRESS="1000/1h,1000",
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


# -- voter identity ---------------------------------------------------------------------------------------------


def _signing_key() -> bytes:
    """The key the suite's services sign with (``service_env``), so the test can mint tokens of its own."""
    return service_env(ServerAddresses(nats_url="", database_url="", redis_url=""))["SHIPSKIP_TOKEN_KEYS"].encode()


@pytest.mark.parametrize(
    ("how", "token", "detail"),
    [
        ("signed with another key", lambda: VoterTokens([b"another-key-" + b"z" * 16], 86400).issue(), "signature"),
        ("truncated", lambda: VoterTokens([_signing_key()], 86400).issue()[:-4], "malformed"),
        ("expired", lambda: VoterTokens([_signing_key()], 86400).issue(now=time.time() - 2 * 86400), "expired"),
        ("not a token", lambda: "hello.world", "malformed"),
    ],
)
def test_forged_and_expired_tokens_are_refused(
    votes: ServiceProcess,
    client: httpx.Client,
    servers: ServerAddresses,
    how: str,
    token: object,
    detail: str,
) -> None:
    value: str = token()  # type: ignore[operator]
    before = stream_seq(servers)
    for headers in ({"X-Voter-Token": value}, {"Cookie": f"shipskip_voter={value}"}):
        response = send_vote(client, votes.url, None, "ship", LLAMA, TOOL, headers)
        assert response.status_code == 401, (how, response.text)
        assert response.json()["error"] == "voter_token_refused"
        assert detail in response.json()["detail"]
    assert stream_seq(servers) == before


def test_a_valid_token_works_from_the_cookie_and_never_reaches_the_stream(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    # Still valid: issued well inside its one-day lifetime.
    token = VoterTokens([_signing_key()], 86400).issue(now=time.time() - 3600)
    first = stream_seq(servers) + 1
    response = send_vote(client, votes.url, None, "ship", LLAMA, TOOL, {"Cookie": f"shipskip_voter={token}"})
    assert response.status_code == 202, response.text
    (event,) = vote_events(servers, first)
    stored = encode_event(event).decode()
    assert token not in stored
    assert token.split(".")[0] not in stored
    assert len(event.voter_id) == 32
    assert event.voter_id != token


def test_the_cookie_is_made_for_a_widget_on_another_site(votes: ServiceProcess, client: httpx.Client) -> None:
    response = client.post(votes.url + "/v1/voters")
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "secure" in attributes
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=none"
    assert cookie.startswith(f"shipskip_voter={response.json()['voter_token']}")


# -- idempotent retries -----------------------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, votes.url)
    key = random_key()
    before = stream_seq(servers)
    first = send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
    retry = send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()
    assert first.json()["status"] == "accepted"
    # The voter changes their mind; a late retry of the first request still gets the first answer, and is not
    # stored again (it would undo the change).
    change = send_vote(client, votes.url, token, "skip", LLAMA, TOOL, {"Idempotency-Key": random_key()})
    assert change.status_code == 202
    late = send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key})
    assert late.status_code == 202
    assert late.json() == first.json()
    events = vote_events(servers, before + 1)
    assert [(e.event_id, e.verdict) for e in events if isinstance(e, VoteCast)] == [
        (first.json()["event_id"], "ship"),
        (change.json()["event_id"], "skip"),
    ]


def test_a_key_reused_with_another_body_is_a_conflict(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, votes.url)
    key = random_key()
    assert send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": key}).status_code == 202
    before = stream_seq(servers)
    other_body = send_vote(client, votes.url, token, "skip", LLAMA, TOOL, {"Idempotency-Key": key})
    other_path = send_vote(client, votes.url, token, None, LLAMA, TOOL, {"Idempotency-Key": key})
    for response in (other_body, other_path):
        assert response.status_code == 422, response.text
        assert response.json()["error"] == "idempotency_key_reused"
        assert "Idempotency-Key" in response.json()["detail"]
    assert stream_seq(servers) == before
    # The key is the voter's own: another voter using it is a request of its own.
    someone_else = send_vote(
        client, votes.url, new_token(client, votes.url), "skip", LLAMA, TOOL, {"Idempotency-Key": key}
    )
    assert someone_else.status_code == 202
    assert stream_seq(servers) == before + 1


def test_concurrent_identical_requests_store_one_event_and_agree(
    votes: ServiceProcess, servers: ServerAddresses, client: httpx.Client
) -> None:
    token = new_token(client, votes.url)
    key = random_key()
    before = stream_seq(servers)

    def once(_: int) -> httpx.Response:
        with httpx.Client(timeout=10.0) as own:
            return send_vote(own, votes.url, token, "ship", LLAMA, OTHER_TOOL, {"Idempotency-Key": key})

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(once, range(6)))
    assert [r.status_code for r in responses] == [202] * 6
    assert len({r.json()["event_id"] for r in responses}) == 1
    assert stream_seq(servers) == before + 1
    (event,) = vote_events(servers, before + 1)
    assert event.event_id == responses[0].json()["event_id"]


def test_retractions_retry_too_and_keys_are_at_most_255_characters(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, votes.url)
    assert send_vote(client, votes.url, token, "ship", LLAMA, TOOL).status_code == 202
    key = "k" * 255
    before = stream_seq(servers)
    first = send_vote(client, votes.url, token, None, LLAMA, TOOL, {"Idempotency-Key": key})
    retry = send_vote(client, votes.url, token, None, LLAMA, TOOL, {"Idempotency-Key": key})
    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json()
    assert stream_seq(servers) == before + 1
    too_long = send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400
    assert too_long.json()["error"] == "invalid_idempotency_key"
    assert stream_seq(servers) == before + 1


# -- repeated verdicts ------------------------------------------------------------------------------------------


def test_repeating_the_current_verdict_is_unchanged_and_stores_nothing(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, votes.url)
    first = stream_seq(servers) + 1
    steps = [
        ("ship", 202),
        ("ship", 200),
        ("skip", 202),
        ("skip", 200),
        (None, 202),
        (None, 200),
        ("ship", 202),
    ]
    for verdict, status in steps:
        response = send_vote(client, votes.url, token, verdict, LLAMA, TOOL)
        assert response.status_code == status, (verdict, response.text)
        if status == 200:
            assert response.json() == {"status": "unchanged", "event_id": None}
    # A ballot is per tool: the other tool of the comparison is a vote of its own.
    assert send_vote(client, votes.url, token, "ship", LLAMA, OTHER_TOOL).status_code == 202
    events = vote_events(servers, first)
    assert [(e.tool_id, getattr(e, "verdict", None)) for e in events] == [
        (TOOL, "ship"),
        (TOOL, "skip"),
        (TOOL, None),
        (TOOL, "ship"),
        (OTHER_TOOL, "ship"),
    ]


def test_an_unchanged_answer_is_replayed_too(votes: ServiceProcess, client: httpx.Client) -> None:
    token = new_token(client, votes.url)
    assert send_vote(client, votes.url, token, "skip", LLAMA, TOOL).status_code == 202
    key = random_key()
    first = send_vote(client, votes.url, token, "skip", LLAMA, TOOL, {"Idempotency-Key": key})
    assert first.status_code == 200
    assert send_vote(client, votes.url, token, "ship", LLAMA, TOOL).status_code == 202
    retry = send_vote(client, votes.url, token, "skip", LLAMA, TOOL, {"Idempotency-Key": key})
    assert retry.status_code == 200
    assert retry.json() == first.json() == {"status": "unchanged", "event_id": None}


# -- cross-origin widgets ---------------------------------------------------------------------------------------


def preflight(client: httpx.Client, url: str, origin: str) -> httpx.Response:
    return client.options(
        f"{url}/v1/comparisons/{LLAMA}/votes",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-voter-token, idempotency-key",
        },
    )


@pytest.mark.parametrize("origin", [SITE, PARTNER])
def test_a_listed_site_may_vote_with_the_cookie(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses, origin: str
) -> None:
    answer = preflight(client, votes.url, origin)
    assert answer.status_code == 204
    allowed = cors_headers(answer)
    assert allowed["access-control-allow-origin"] == origin
    assert allowed["access-control-allow-credentials"] == "true"
    assert {"POST", "DELETE"} <= {m.strip() for m in allowed["access-control-allow-methods"].split(",")}
    assert {"content-type", "x-voter-token", "idempotency-key"} <= {
        h.strip().lower() for h in allowed["access-control-allow-headers"].split(",")
    }
    assert "origin" in answer.headers["vary"].lower()

    issued = client.post(votes.url + "/v1/voters", headers={"Origin": origin})
    assert issued.status_code == 201
    assert cors_headers(issued)["access-control-allow-origin"] == origin
    first = stream_seq(servers) + 1
    response = send_vote(
        client,
        votes.url,
        None,
        "ship",
        LLAMA,
        TOOL,
        {"Origin": origin, "Cookie": f"shipskip_voter={issued.json()['voter_token']}"},
    )
    assert response.status_code == 202, response.text
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-credentials"] == "true"
    exposed = {h.strip().lower() for h in headers["access-control-expose-headers"].split(",")}
    assert {"ratelimit", "ratelimit-policy", "retry-after"} <= exposed
    assert "origin" in response.headers["vary"].lower()
    (event,) = vote_events(servers, first)
    assert event.origin.widget == origin


def test_other_origins_get_no_cors_headers_and_cannot_act(
    votes: ServiceProcess, client: httpx.Client, servers: ServerAddresses
) -> None:
    token = new_token(client, votes.url)
    before = stream_seq(servers)
    answer = preflight(client, votes.url, STRANGER)
    assert answer.status_code == 403
    assert cors_headers(answer) == {}
    refused = [
        send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Origin": STRANGER}),
        send_vote(client, votes.url, token, None, LLAMA, TOOL, {"Origin": STRANGER}),
        client.post(votes.url + "/v1/voters", headers={"Origin": STRANGER}),
        # A listed site's origin with another scheme or port is another origin.
        send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Origin": "http://widgets.example.com"}),
        send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Origin": SITE + ":8443"}),
        send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Origin": "null"}),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "origin_not_allowed"
        assert cors_headers(response) == {}
        assert "set-cookie" not in response.headers
    assert stream_seq(servers) == before
    # Reading is harmless: answered, but without CORS headers the stranger's page cannot see it.
    health = client.get(votes.url + "/healthz", headers={"Origin": STRANGER})
    assert health.status_code == 200
    assert cors_headers(health) == {}
    # Without an Origin (not a browser page), a vote goes through as before.
    assert send_vote(client, votes.url, token, "ship", LLAMA, TOOL).status_code == 202


def test_pages_of_the_api_itself_are_same_origin(votes: ServiceProcess, client: httpx.Client) -> None:
    token = new_token(client, votes.url)
    own = send_vote(client, votes.url, token, "skip", LLAMA, TOOL, {"Origin": votes.url})
    assert own.status_code == 202, own.text
    assert cors_headers(own) == {}
    # Another port of the same host is another origin.
    other_port = votes.url.rsplit(":", 1)[0] + ":1"
    refused = send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"Origin": other_port})
    assert refused.status_code == 403


def test_answers_are_json_and_never_500(votes: ServiceProcess, client: httpx.Client) -> None:
    token = new_token(client, votes.url)
    odd = [
        send_vote(client, votes.url, token, "ship", LLAMA, TOOL, {"X-Forwarded-For": "not an address"}),
        send_vote(client, votes.url, token, "skip", LLAMA, TOOL, {"Idempotency-Key": ""}),
        client.post(
            f"{votes.url}/v1/comparisons/{LLAMA}/votes",
            content=msgspec.json.encode({"tool_id": TOOL, "verdict": "skip"}),
            headers=[
                (b"X-Voter-Token", token.encode()),
                (b"Content-Type", b"application/json"),
                (b"Idempotency-Key", "é".encode() * 10),
            ],
        ),
    ]
    assert [r.status_code for r in odd] == [202, 400, 202]
    assert all(r.headers["content-type"].startswith("application/json") for r in odd)


# -- every answer of the vote POST, exactly (status, headers in order, body) -----------------------------------

_VARYING = {"x-request-id", "date", "ratelimit"}  # the request's id, the clock, counters one vote further on
_SERVERS_OWN = {"connection"}
"""Hop-by-hop, granian's and not the app's: a refusal answered before the body was read gets "connection: close"
when the body had not all arrived by then."""


def _answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], object]:
    headers = [(k, "" if k in _VARYING else v) for k, v in response.headers.items() if k not in _SERVERS_OWN]
    body = response.json() if response.content else None
    if isinstance(body, dict) and body.get("event_id"):
        body["event_id"] = "<new>"
    return response.status_code, headers, body


_LIMITS = [("ratelimit-policy", '"voter";q=30;w=60'), ("ratelimit", "")]
_CORS = [
    ("access-control-allow-origin", SITE),
    ("access-control-allow-credentials", "true"),
    ("access-control-expose-headers", "RateLimit, RateLimit-Policy, Retry-After"),
    ("vary", "Origin"),
]
_SERVER = [("x-request-id", ""), ("server", "granian"), ("date", "")]
_VOTE = b'{"tool_id": "windsurf-swe-1", "verdict": "ship"}'
_TOO_LARGE = b'{"tool_id": "windsurf-swe-1", "verdict": "ship", "pad": "' + b"x" * 5000 + b'"}'
_ACCEPTED = {"status": "accepted", "event_id": "<new>"}


def _json(length: int) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("content-length", str(length))]


def _error(error: str, detail: str) -> dict[str, str]:
    return {"error": error, "detail": detail}


# What the vote POST answered when it was routed in front of Litestar (services/votes/cast_front.py, removed), and
# through Litestar's own routing and handler: the answers that must not change.
@pytest.mark.parametrize(
    ("case", "headers", "body", "status", "answer_headers", "answer"),
    [
        ("accepted, listed site", {"Origin": SITE}, _VOTE, 202, [*_LIMITS, *_json(61), *_CORS, *_SERVER], _ACCEPTED),
        ("accepted, no origin", {}, _VOTE, 202, [*_LIMITS, *_json(61), *_SERVER], _ACCEPTED),
        (
            "other origin", {"Origin": STRANGER}, _VOTE, 403, [("vary", "Origin"), *_json(146), *_SERVER],
            _error(
                "origin_not_allowed",
                "pages of 'https://evil.example.net' may not call this API (it is not one of the configured site "
                "origins)",
            ),
        ),
        (
            "no token", {"X-Voter-Token": ""}, _VOTE, 401, [*_json(110), *_SERVER],
            _error("voter_token_missing", "send the voter token from POST /v1/voters (cookie or X-Voter-Token)"),
        ),
        (
            "forged token", {"X-Voter-Token": "AAAA.BBBB"}, _VOTE, 401, [*_json(64), *_SERVER],
            _error("voter_token_refused", "malformed voter token"),
        ),
        (
            "malformed", {"Origin": SITE}, b'{"tool_id": ', 400, [*_json(90), *_CORS, *_SERVER],
            _error("malformed_json", "the body is not valid JSON: Input data was truncated"),
        ),
        (
            "not JSON", {"Content-Type": "text/plain"}, _VOTE, 415, [*_json(79), *_SERVER],
            _error("unsupported_media_type", "send the vote as application/json"),
        ),
        (
            "not JSON, listed site", {"Content-Type": "text/plain", "Origin": SITE}, b"{}", 415,
            [*_json(79), *_CORS, *_SERVER], _error("unsupported_media_type", "send the vote as application/json"),
        ),
        (
            "JSON with a charset", {"Content-Type": "Application/JSON; charset=utf-8"}, _VOTE, 202,
            [*_LIMITS, *_json(61), *_SERVER], _ACCEPTED,
        ),
        (
            "repeated key", {}, b'{"tool_id": "windsurf-swe-1", "verdict": "ship", "verdict": "skip"}', 422,
            [*_json(67), *_SERVER], _error("invalid_vote", "the key 'verdict' appears twice"),
        ),
        (
            "too large", {}, _TOO_LARGE, 413, [*_json(62), *_SERVER],
            _error("body_too_large", "Request Entity Too Large"),
        ),
        (
            "too large, listed site", {"Origin": SITE}, _TOO_LARGE, 413, [*_json(62), *_CORS, *_SERVER],
            _error("body_too_large", "Request Entity Too Large"),
        ),
        (
            "unknown tool", {}, b'{"tool_id": "smolvlm2-2b", "verdict": "ship"}', 404, [*_json(109), *_SERVER],
            _error("unknown_tool", "tool 'smolvlm2-2b' is not in comparison 'llama-4-scout-vs-windsurf-swe-1'"),
        ),
    ],
)  # fmt: skip
def test_the_vote_post_answers_exactly_as_before(
    votes: ServiceProcess,
    client: httpx.Client,
    case: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    answer_headers: list[tuple[str, str]],
    answer: object,
) -> None:
    # A trailing slash is the same route to Litestar.
    for path in (f"/v1/comparisons/{LLAMA}/votes", f"/v1/comparisons/{LLAMA}/votes/"):
        sent = {"Content-Type": "application/json", "X-Voter-Token": new_token(client, votes.url), **headers}
        sent = {name: value for name, value in sent.items() if value}  # an empty value: the header left out
        assert _answer(client.post(votes.url + path, content=body, headers=sent)) == (status, answer_headers, answer)


def test_a_vote_by_cookie_and_an_unchanged_vote_answer_exactly_as_before(
    votes: ServiceProcess, client: httpx.Client
) -> None:
    token = new_token(client, votes.url)
    client.cookies.clear()  # the cookie of new_token's answer
    path = f"{votes.url}/v1/comparisons/{LLAMA}/votes"
    cookie = {"Content-Type": "application/json", "Cookie": f"theme=dark; shipskip_voter={token}; x=1"}
    assert _answer(client.post(path, content=_VOTE, headers=cookie)) == (
        202, [*_LIMITS, *_json(61), *_SERVER], _ACCEPTED
    )  # fmt: skip
    again = client.post(path, content=_VOTE, headers={"Content-Type": "application/json", "X-Voter-Token": token})
    assert _answer(again) == (200, [*_LIMITS, *_json(38), *_SERVER], {"status": "unchanged", "event_id": None})


def test_other_methods_on_the_vote_path_answer_exactly_as_before(votes: ServiceProcess, client: httpx.Client) -> None:
    path = f"{votes.url}/v1/comparisons/{LLAMA}/votes"
    not_allowed = (
        405,
        [("allow", "POST, OPTIONS"), *_json(60), *_SERVER],
        _error("method_not_allowed", "Method Not Allowed"),
    )
    assert _answer(client.get(path)) == not_allowed
    assert _answer(client.put(path, content=_VOTE)) == not_allowed
    assert _answer(client.options(path)) == (204, [("allow", "OPTIONS, POST"), *_SERVER], None)
