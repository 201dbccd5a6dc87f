"""Identity and errors against the real services (issue 21, item 4): tokens that must not be taken, bodies that end
early or are not JSON, HEAD on GET resources, and guesses at the admin token.

Every refusal is a JSON 4xx naming the problem and writes nothing; a request the client broke is never a 5xx,
neither in its answer nor in ``shipskip_http_requests_total``.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest

from infra.stack.servers import ServerAddresses
from tests.hostile.rawhttp import RawResponse, build, exchange, read_response
from tests.integration.metrics_text import scrape
from tests.support import Pipeline, new_voter, running_pipeline, stream_last_seq, wait_until

COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
VOTES = f"/v1/comparisons/{COMPARISON}/votes"
SIGNING_KEY = b"test-signing-key-" + b"a" * 16  # tests/support.py service_env
ADMIN_TOKEN = "admin-token-for-hostile-tests-0123"
ADMIN_FAILURES = 4
ADMIN_WINDOW_S = 3
Service = Literal["votes", "read"]
Headers = list[tuple[bytes | str, bytes | str]]
GOOD = json.dumps({"tool_id": TOOL, "verdict": "ship"}).encode()


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir: Path = tmp_path_factory.mktemp("identity-logs")
    env = {
        "SHIPSKIP_ADMIN_TOKEN": ADMIN_TOKEN,
        "SHIPSKIP_ADMIN_AUTH_FAILURES": str(ADMIN_FAILURES),
        "SHIPSKIP_ADMIN_AUTH_WINDOW_S": str(ADMIN_WINDOW_S),
    }
    with running_pipeline(servers, log_dir, **env) as running:
        yield running


@pytest.fixture
def unchanged_stream(servers: ServerAddresses) -> Iterator[None]:
    before = asyncio.run(stream_last_seq(servers))
    yield
    assert asyncio.run(stream_last_seq(servers)) == before, "a refused request wrote to the stream"


def port(pipeline: Pipeline, service: Service) -> int:
    number = pipeline.processes[service].port
    assert number is not None
    return number


def signed_token(issued_at: int) -> str:
    """A token signed with the services' key, as VoterTokens.issue makes one, issued at ``issued_at``."""
    payload = struct.pack(">B16sQ", 1, secrets.token_bytes(16), issued_at)
    mac = hmac.new(SIGNING_KEY, payload, hashlib.sha256).digest()[:16]
    return b".".join(base64.urlsafe_b64encode(part).rstrip(b"=") for part in (payload, mac)).decode()


def vote(pipeline: Pipeline, headers: dict[str, str], body: bytes = GOOD) -> httpx.Response:
    return httpx.post(
        pipeline.votes_url + VOTES, content=body, headers={"Content-Type": "application/json", **headers}, timeout=10
    )


def refused(response: httpx.Response | RawResponse, status: int, error: str) -> str:
    """The refusal's detail, once it is the JSON ``status`` naming ``error``."""
    code = response.status_code if isinstance(response, httpx.Response) else response.status
    body = response.json()
    assert (code, body["error"]) == (status, error), (code, body)
    detail: str = body["detail"]
    return detail


# -- voter tokens ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("issued_at", [int(time.time()) + 10 * 365 * 86400, 2**64 - 1], ids=["in 10 years", "2^64-1"])
def test_a_token_issued_in_the_future_is_refused(pipeline: Pipeline, unchanged_stream: None, issued_at: int) -> None:
    detail = refused(vote(pipeline, {"X-Voter-Token": signed_token(issued_at)}), 401, "voter_token_refused")
    assert "future" in detail


def test_a_token_issued_within_the_clock_skew_is_taken(pipeline: Pipeline) -> None:
    response = vote(pipeline, {"X-Voter-Token": signed_token(int(time.time()) + 60)})
    assert response.status_code == 202, response.text


def _other_spellings(token: str) -> list[str]:
    head, tail = token.split(".")
    # The last of 22 characters holds 4 bits of the 16-byte MAC and 2 unused ones: set one of those.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(tail[-1]) ^ 1]
    return [f"{head}.{tail}==", f"{head}.{tail[:-1]}{last}", f"{head}=.{tail}", f"{head}.{tail}="]


def test_a_token_is_taken_in_its_one_spelling_only(pipeline: Pipeline, servers: ServerAddresses) -> None:
    with httpx.Client(timeout=10) as client:
        token = new_voter(client, pipeline.votes_url)
    assert vote(pipeline, {"X-Voter-Token": token}).status_code == 202
    before = asyncio.run(stream_last_seq(servers))
    for spelling in _other_spellings(token):  # each decodes to the same bytes
        detail = refused(vote(pipeline, {"X-Voter-Token": spelling}), 401, "voter_token_refused")
        assert "spelling" in detail
    assert asyncio.run(stream_last_seq(servers)) == before


def test_two_different_voter_cookies_are_refused(pipeline: Pipeline, unchanged_stream: None) -> None:
    with httpx.Client(timeout=10) as client:
        first, second = new_voter(client, pipeline.votes_url), new_voter(client, pipeline.votes_url)
    for cookies in (
        [f"shipskip_voter={first}; shipskip_voter={second}"],
        [f"shipskip_voter={first}", f"shipskip_voter={second}"],
    ):
        request = build(
            "POST",
            VOTES,
            headers=[("Content-Type", "application/json"), *(("Cookie", line) for line in cookies)],
            body=GOOD,
        )
        detail = refused(exchange(port(pipeline, "votes"), request), 401, "voter_cookie_repeated")
        assert "shipskip_voter" in detail


def test_two_different_voter_token_headers_are_refused(pipeline: Pipeline, unchanged_stream: None) -> None:
    with httpx.Client(timeout=10) as client:
        first, second = new_voter(client, pipeline.votes_url), new_voter(client, pipeline.votes_url)
    headers: Headers = [("Content-Type", "application/json"), ("X-Voter-Token", first), ("X-Voter-Token", second)]
    request = build("POST", VOTES, headers=headers, body=GOOD)
    detail = refused(exchange(port(pipeline, "votes"), request), 401, "voter_token_repeated")
    assert "X-Voter-Token" in detail


def test_the_same_voter_token_twice_is_one_voter(pipeline: Pipeline) -> None:
    with httpx.Client(timeout=10) as client:
        token = new_voter(client, pipeline.votes_url)
    response = vote(pipeline, {"Cookie": f"shipskip_voter={token}; shipskip_voter={token}"})
    assert response.status_code == 202, response.text
    headers: Headers = [("Content-Type", "application/json"), ("X-Voter-Token", token), ("X-Voter-Token", token)]
    again = exchange(port(pipeline, "votes"), build("POST", VOTES, headers=headers, body=GOOD))
    assert again.status == 200, (again.status, again.body)  # unchanged: the same voter's same verdict


# -- bodies that end early ---------------------------------------------------------------------------------------


def server_errors(ops_url: str) -> float:
    return sum(
        value
        for name, labels, value in scrape(ops_url).samples
        if name == "shipskip_http_requests_total" and labels["status"].startswith("5")
    )


def client_errors(ops_url: str, status: str) -> float:
    return scrape(ops_url).value("shipskip_http_requests_total", status=status)


def hang_up_mid_body(port_number: int, head: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port_number), timeout=10) as conn:
        conn.sendall(head + b'{"tool_id":')
        time.sleep(0.3)  # the head is read and the body begun before the connection goes


def body_route(pipeline: Pipeline, service: Service) -> tuple[str, Headers]:
    """A route that reads a body, and the headers it needs: the vote POST, or an admin POST on the read API."""
    if service == "read":
        return "/admin/void", [("Authorization", f"Bearer {ADMIN_TOKEN}"), ("Content-Type", "application/json")]
    with httpx.Client(timeout=10) as client:
        token = new_voter(client, pipeline.votes_url)
    return VOTES, [("X-Voter-Token", token), ("Content-Type", "application/json")]


def broken_chunks(target: str, headers: Headers) -> bytes:
    # A chunk of 5 bytes, then a size line that is no hexadecimal number.
    request = build("POST", target, headers=[*headers, ("Transfer-Encoding", "chunked")], content_length=False)
    return request + b'5\r\n{"too\r\nZZ\r\nxx\r\n0\r\n\r\n'


@pytest.mark.parametrize("service", ["votes", "read"])
def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    pipeline: Pipeline, unchanged_stream: None, service: Service
) -> None:
    process = pipeline.processes[service]
    target, headers = body_route(pipeline, service)
    errors_before, refusals_before = server_errors(process.ops_url), client_errors(process.ops_url, "400")
    head = build("POST", target, headers=[*headers, ("Content-Length", "100")], content_length=False)
    hang_up_mid_body(port(pipeline, service), head)
    wait_until(lambda: client_errors(process.ops_url, "400") > refusals_before, timeout=15)
    assert server_errors(process.ops_url) == errors_before


@pytest.mark.parametrize("service", ["votes", "read"])
def test_broken_chunk_framing_is_a_400_and_no_server_error(
    pipeline: Pipeline, unchanged_stream: None, service: Service
) -> None:
    process = pipeline.processes[service]
    target, headers = body_route(pipeline, service)
    errors_before, refusals_before = server_errors(process.ops_url), client_errors(process.ops_url, "400")
    response = exchange(port(pipeline, service), broken_chunks(target, headers))
    assert "chunked" in refused(response, 400, "body_incomplete")
    wait_until(lambda: client_errors(process.ops_url, "400") > refusals_before, timeout=15)  # counted, as a 400
    assert server_errors(process.ops_url) == errors_before


# -- JSON ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[", b'{"tool_id": 7, "verdict"', b"[1,", b'"ship'])
def test_a_truncated_json_body_is_malformed_not_the_wrong_type(
    pipeline: Pipeline, unchanged_stream: None, body: bytes
) -> None:
    with httpx.Client(timeout=10) as client:
        token = new_voter(client, pipeline.votes_url)
    refused(vote(pipeline, {"X-Voter-Token": token}, body), 400, "malformed_json")
    admin = httpx.post(
        pipeline.read_url + "/admin/void",
        content=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    refused(admin, 400, "malformed_json")


@pytest.mark.parametrize("body", [b"[]", b'"ship"', b'{"tool_id": 7, "verdict": "ship"}'])
def test_well_formed_json_of_the_wrong_shape_stays_a_422(
    pipeline: Pipeline, unchanged_stream: None, body: bytes
) -> None:
    with httpx.Client(timeout=10) as client:
        token = new_voter(client, pipeline.votes_url)
    refused(vote(pipeline, {"X-Voter-Token": token}, body), 422, "invalid_vote")


# -- HEAD ----------------------------------------------------------------------------------------------------------


HEAD_RESOURCES: list[tuple[Service, str, dict[str, str]]] = [
    ("votes", "/healthz", {}),
    ("votes", "/widget.js", {}),
    ("votes", "/schema/openapi.json", {}),
    ("read", "/healthz", {}),
    ("read", "/v1/comparisons", {}),
    ("read", f"/v1/comparisons/{COMPARISON}/community", {}),
    ("read", "/admin/status", {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
]


@pytest.mark.parametrize(("service", "path", "headers"), HEAD_RESOURCES, ids=[f"{s} {p}" for s, p, _ in HEAD_RESOURCES])
def test_head_is_answered_as_get_without_a_body(
    pipeline: Pipeline, service: Service, path: str, headers: dict[str, str]
) -> None:
    got = exchange(port(pipeline, service), build("GET", path, headers=list(headers.items())))
    assert got.status == 200, (got.status, got.body[:300])
    assert got.body
    raw = exchange(port(pipeline, service), build("HEAD", path, headers=list(headers.items())))
    assert raw.status == 200, (raw.status, raw.body[:300])
    assert raw.body == b""
    assert raw.header("content-type") == got.header("content-type")
    if service == "votes":  # the read API's figures may change in between
        assert raw.header("content-length") == got.header("content-length")


def test_head_on_a_live_stream_answers_its_head_and_ends(pipeline: Pipeline) -> None:
    path = f"/v1/comparisons/{COMPARISON}/community/stream"
    with socket.create_connection(("127.0.0.1", port(pipeline, "read")), timeout=10) as conn:
        conn.sendall(build("HEAD", path))
        response = read_response(conn)  # until the server closes: a stream that went on would time out here
    assert response.status == 200
    assert (response.header("content-type") or "").startswith("text/event-stream")
    assert response.body == b""
    wait_until(lambda: httpx.get(pipeline.read_url + "/healthz", timeout=10).json()["streams"] == 0, timeout=15)


def test_head_on_a_route_without_get_is_still_405(pipeline: Pipeline) -> None:
    raw = exchange(port(pipeline, "votes"), build("HEAD", VOTES))
    assert raw.status == 405
    assert raw.body == b""


# -- admin token guesses (last: it locks 127.0.0.1 out of /admin for a window) ---------------------------------------


def test_admin_token_guesses_are_limited_per_address(pipeline: Pipeline) -> None:
    def admin_status(token: str) -> httpx.Response:
        return httpx.get(pipeline.read_url + "/admin/status", headers={"Authorization": f"Bearer {token}"}, timeout=10)

    for guess in range(ADMIN_FAILURES):
        refused(admin_status(f"guess-{guess}-0123456789abcdef"), 401, "unauthorized")
    limited = admin_status("guess-more-0123456789abcdef")
    detail = refused(limited, 429, "admin_auth_rate_limited")
    assert "failed admin logins" in detail
    assert 1 <= int(limited.headers["Retry-After"]) <= ADMIN_WINDOW_S
    # Refused with the right token too: the guesser is not told when a guess would have been right.
    refused(admin_status(ADMIN_TOKEN), 429, "admin_auth_rate_limited")
    wait_until(lambda: admin_status(ADMIN_TOKEN).status_code == 200, timeout=ADMIN_WINDOW_S + 10, interval=0.5)
