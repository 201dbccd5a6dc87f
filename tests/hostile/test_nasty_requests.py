"""Hostile and malformed requests against the real votes and read services (granian processes, real NATS).

Each one gets a clear 4xx and writes nothing: the VOTES stream's last sequence is the same after it, and the
service still answers its health check. A refusal made by the application is JSON ``{"error", "detail"}``;
a request too broken to be HTTP at all (raw NUL or bare CR in the head, two Content-Lengths, a request line
past the server's limit) is refused by the HTTP server itself, before the application, with an empty 4xx.
"""

import asyncio
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.stack.servers import ServerAddresses
from tests.hostile.rawhttp import RawResponse, build, exchange, read_response
from tests.support import Pipeline, new_voter, running_pipeline, stream_last_seq, wait_until

COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
VOTES = f"/v1/comparisons/{COMPARISON}/votes"
HEADER_TIMEOUT_MS = 2000
"""granian's own limit on the time to send a request head, set short here so the test can wait it out."""

ENV = {"SHIPSKIP_RATE_LIMITS": "off", "GRANIAN_HTTP1_HEADER_READ_TIMEOUT": str(HEADER_TIMEOUT_MS)}


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir: Path = tmp_path_factory.mktemp("hostile-logs")
    with running_pipeline(servers, log_dir, **ENV) as running:
        yield running


@pytest.fixture(scope="module")
def token(pipeline: Pipeline) -> str:
    with httpx.Client(timeout=10) as client:
        return new_voter(client, pipeline.votes_url)


def port(pipeline: Pipeline, service: str) -> int:
    number = pipeline.processes["votes" if service == "votes" else "read"].port
    assert number is not None
    return number


def json_post(token: str, body: bytes, target: str = VOTES, **extra: str) -> bytes:
    headers: list[tuple[bytes | str, bytes | str]] = [("X-Voter-Token", token), ("Content-Type", "application/json")]
    headers += list(extra.items())
    return build("POST", target, headers=headers, body=body)


def chunked_post(token: str, body: bytes) -> bytes:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000]) for i in range(0, len(body), 1000)
    )
    headers: list[tuple[bytes | str, bytes | str]] = [
        ("X-Voter-Token", token),
        ("Content-Type", "application/json"),
        ("Transfer-Encoding", "chunked"),
    ]
    return build("POST", VOTES, headers=headers, body=chunks + b"0\r\n\r\n", content_length=False)


def vote_body(tool: str = TOOL, verdict: str = "ship") -> bytes:
    return json.dumps({"tool_id": tool, "verdict": verdict}).encode()


SQL = "x' OR '1'='1'; DROP TABLE ballots; --"
LONG_ID = "a" * 10_000

Case = tuple[str, Callable[[str], bytes], set[int]]
"""(service, request given a valid voter token, the statuses that are right)"""

# Refused by the application: JSON {"error", "detail"}.
APPLICATION_REFUSALS: dict[str, Case] = {
    "huge body (10 MB)": ("votes", lambda t: json_post(t, b'{"tool_id":"' + b"a" * 10_000_000 + b'"}'), {413}),
    "huge body, chunked, no length": ("votes", lambda t: chunked_post(t, b"[" + b"0," * 50_000 + b"0]"), {413}),
    "deeply nested arrays": ("votes", lambda t: json_post(t, b"[" * 2040 + b"]" * 2040), {422}),
    "deeply nested objects in a field": (
        "votes",
        lambda t: json_post(t, b'{"tool_id":' + b'{"a":' * 600 + b"1" + b"}" * 600 + b',"verdict":"ship"}'),
        {422},
    ),
    "raw NUL byte in a JSON string": ("votes", lambda t: json_post(t, b'{"tool_id":"windsurf-swe-1\x00"}'), {400}),
    "escaped NUL in the tool id": ("votes", lambda t: json_post(t, vote_body(TOOL + "\u0000")), {422}),
    "invalid UTF-8 outside strings": ("votes", lambda t: json_post(t, b'{"tool_id":"x",\xff\xfe"verdict":1}'), {400}),
    "byte-order mark before the JSON": ("votes", lambda t: json_post(t, b"\xef\xbb\xbf" + vote_body()), {400}),
    "trailing garbage after the JSON": ("votes", lambda t: json_post(t, vote_body() + b" x"), {400}),
    "empty body": ("votes", lambda t: json_post(t, b""), {400}),
    "a JSON string, not an object": ("votes", lambda t: json_post(t, b'"ship"'), {422}),
    "number out of range": ("votes", lambda t: json_post(t, b'{"tool_id":"x","verdict":1e999999}'), {422}),
    "look-alike hyphens in the tool id": (
        "votes",
        lambda t: json_post(t, vote_body("windsurf\u2010swe\u20101")),
        {422},
    ),
    "verdict in capitals": ("votes", lambda t: json_post(t, vote_body(verdict="SHIP")), {422}),
    "very long tool id in the body": ("votes", lambda t: json_post(t, vote_body("a" * 3000)), {422}),
    "very long comparison id": (
        "votes",
        lambda t: json_post(t, vote_body(), f"/v1/comparisons/{LONG_ID}/votes"),
        {404},
    ),
    "very long tool id in the path": (
        "votes",
        lambda t: build("DELETE", f"{VOTES}/{LONG_ID}", headers=[("X-Voter-Token", t)]),
        {404},
    ),
    "SQL in the comparison id": (
        "votes",
        lambda t: json_post(t, vote_body(), "/v1/comparisons/" + httpx.URL(SQL).raw_path.decode() + "/votes"),
        {404},
    ),
    "SQL in the tool id": ("votes", lambda t: json_post(t, vote_body(SQL)), {422}),
    "SQL in the tool id of a retraction": (
        "votes",
        lambda t: build("DELETE", f"{VOTES}/x%27%3B%20DROP%20TABLE%20tallies%3B--", headers=[("X-Voter-Token", t)]),
        {404},
    ),
    "path traversal, raw": (
        "votes",
        lambda t: json_post(t, vote_body(), "/v1/comparisons/../../../etc/passwd/votes"),
        {404},
    ),
    "path traversal, encoded": (
        "votes",
        lambda t: json_post(t, vote_body(), "/v1/comparisons/%2e%2e%2f%2e%2e%2fetc%2fpasswd/votes"),
        {404},
    ),
    "overlong UTF-8 dots": ("votes", lambda t: json_post(t, vote_body(), "/v1/comparisons/%c0%ae%c0%ae/votes"), {404}),
    "NUL in the path, encoded": ("votes", lambda t: json_post(t, vote_body(), "/v1/comparisons/%00/votes"), {404}),
    "invalid UTF-8 in the path": ("votes", lambda t: json_post(t, vote_body(), "/v1/comparisons/%ff%fe/votes"), {404}),
    "CRLF and a header smuggled into the path": (
        "votes",
        lambda t: json_post(t, vote_body(), "/v1/comparisons/a%0d%0aSet-Cookie:%20shipskip_voter=x/votes"),
        {404},
    ),
    "body and Transfer-Encoding with a Content-Length": (
        "votes",
        lambda t: json_post(t, b"0\r\n\r\n", **{"Transfer-Encoding": "chunked"}).replace(
            b"Content-Length: 5", b"Content-Length: 40"
        ),
        {400},
    ),
    "forged token of 8 KB": ("votes", lambda t: json_post("A" * 4000 + "." + "B" * 4000, vote_body()), {401}),
    "token of non-ASCII bytes": (
        "votes",
        lambda t: build(
            "POST",
            VOTES,
            headers=[("X-Voter-Token", b"\xff\xfe\xfd"), ("Content-Type", "application/json")],
            body=vote_body(),
        ),
        {401},
    ),
    "two voter cookies, both junk": (
        "votes",
        lambda t: build(
            "POST",
            VOTES,
            headers=[("Cookie", b'shipskip_voter=\xff; shipskip_voter="\\"'), ("Content-Type", "application/json")],
            body=vote_body(),
        ),
        {401},
    ),
    "Idempotency-Key of 256 characters": (
        "votes",
        lambda t: json_post(t, vote_body(), **{"Idempotency-Key": "k" * 256}),
        {400},
    ),
    "multipart body": (
        "votes",
        lambda t: build(
            "POST",
            VOTES,
            headers=[("X-Voter-Token", t), ("Content-Type", "multipart/form-data; boundary=x")],
            body=b"--x--",
        ),
        {415},
    ),
    "no content type": (
        "votes",
        lambda t: build("POST", VOTES, headers=[("X-Voter-Token", t)], body=vote_body()),
        {415},
    ),
    "a method the route does not take": (
        "votes",
        lambda t: build("PUT", VOTES, headers=[("X-Voter-Token", t)], body=b"{}"),
        {405},
    ),
    "read: very long comparison id": ("read", lambda t: build("GET", f"/v1/comparisons/{LONG_ID}/community"), {404}),
    "read: SQL in the comparison id": (
        "read",
        lambda t: build("GET", "/v1/comparisons/" + httpx.URL(SQL).raw_path.decode() + "/community"),
        {404},
    ),
    "read: SQL in the query": ("read", lambda t: build("GET", "/v1/community?comparison_id=%27%20OR%201%3D1--"), {404}),
    "read: path traversal": ("read", lambda t: build("GET", "/v1/comparisons/../../etc/passwd/community"), {404}),
    "read: NUL in the path": ("read", lambda t: build("GET", "/v1/comparisons/%00/community"), {404}),
    "read: invalid UTF-8 in the query": ("read", lambda t: build("GET", "/v1/community?comparison_id=%ff%fe"), {404}),
    "read: 2,000 comparison ids": (
        "read",
        lambda t: build("GET", "/v1/community?" + "&".join(["comparison_id=x"] * 2000)),
        {400},
    ),
    "read: a stream of a very long id": (
        "read",
        lambda t: build("GET", f"/v1/comparisons/{LONG_ID}/community/stream"),
        {404},
    ),
    "read: POST to a read route": ("read", lambda t: build("POST", "/v1/community", body=b"{}"), {405}),
}

# Refused by the HTTP server before the application: an empty 4xx.
PROTOCOL_REFUSALS: dict[str, Case] = {
    "raw NUL in the request line": ("votes", lambda t: build("POST", b"/v1/comp\x00arisons", body=b"{}"), {400}),
    "bare CR inside a header (header injection)": (
        "votes",
        lambda t: json_post(t, vote_body(), **{"X-Note": "a\rSet-Cookie: shipskip_voter=x"}),
        {400},
    ),
    "folded header line (obs-fold)": (
        "votes",
        lambda t: json_post(t, vote_body()).replace(b"Connection: close\r\n", b"Connection: close\r\n X-Folded: 1\r\n"),
        {400},
    ),
    "control byte in the Idempotency-Key": (
        "votes",
        lambda t: json_post(t, vote_body(), **{"Idempotency-Key": "key\x01"}),
        {400},
    ),
    "two different Content-Lengths": (
        "votes",
        lambda t: json_post(t, b"{}").replace(b"Content-Length: 2", b"Content-Length: 2\r\nContent-Length: 3"),
        {400},
    ),
    "request line of 100 KB": ("votes", lambda t: build("GET", "/v1/comparisons/" + "a" * 100_000 + "/votes"), {414}),
    "read: request line of 100 KB": (
        "read",
        lambda t: build("GET", "/v1/comparisons/" + "a" * 100_000 + "/community"),
        {414},
    ),
    "read: NUL byte in a header": (
        "read",
        lambda t: build("GET", f"/v1/comparisons/{COMPARISON}/community", headers=[("If-None-Match", b'"\x00"')]),
        {400},
    ),
}


def send(pipeline: Pipeline, servers: ServerAddresses, case: Case, token: str) -> RawResponse:
    """Send the case; check that it wrote nothing and that the service still answers."""
    service, request, _ = case
    before = asyncio.run(stream_last_seq(servers))
    response = exchange(port(pipeline, service), request(token))
    assert asyncio.run(stream_last_seq(servers)) == before, "a refused request wrote to the stream"
    url = pipeline.votes_url if service == "votes" else pipeline.read_url
    assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    return response


@pytest.mark.parametrize(
    "name",
    [name for name in APPLICATION_REFUSALS],
)
def test_nasty_requests_get_a_clear_json_4xx_and_write_nothing(
    pipeline: Pipeline, servers: ServerAddresses, token: str, name: str
) -> None:
    case = APPLICATION_REFUSALS[name]
    response = send(pipeline, servers, case, token)
    assert response.status in case[2], (response.status, response.body[:300])
    assert (response.header("content-type") or "").startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str)
    assert body["error"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert len(response.body) < 1000, "the refusal echoes the hostile input back at length"
    assert response.header("set-cookie") is None


@pytest.mark.parametrize("name", list(PROTOCOL_REFUSALS))
def test_requests_that_are_not_http_are_refused_by_the_server_and_write_nothing(
    pipeline: Pipeline, servers: ServerAddresses, token: str, name: str
) -> None:
    case = PROTOCOL_REFUSALS[name]
    response = send(pipeline, servers, case, token)
    assert response.status in case[2], (response.status, response.body[:300])
    assert response.header("set-cookie") is None


def test_invalid_utf8_inside_a_json_string_is_a_400(pipeline: Pipeline, servers: ServerAddresses, token: str) -> None:
    case: Case = ("votes", lambda t: json_post(t, b'{"tool_id":"windsurf-swe-1\xff","verdict":"ship"}'), {400})
    response = send(pipeline, servers, case, token)
    assert response.status == 400, (response.status, response.body[:300])
    assert response.json()["error"] == "malformed_json"


def test_duplicate_json_keys_are_refused(pipeline: Pipeline, servers: ServerAddresses, token: str) -> None:
    body = b'{"tool_id":"windsurf-swe-1","verdict":"ship","verdict":"skip"}'
    response = send(pipeline, servers, ("votes", lambda t: json_post(t, body), {400, 422}), token)
    assert response.status in {400, 422}, (response.status, response.body[:300])
    assert "error" in response.json()


# -- random bodies ---------------------------------------------------------------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
_vote_like = st.fixed_dictionaries(
    {
        "tool_id": st.sampled_from([TOOL, "llama-4-scout-fine-tuning-toolkit", "smolvlm2-2b", "Windsurf-SWE-1", "", 3]),
        "verdict": st.sampled_from(["ship", "skip", "SHIP", "maybe", "", None, 1, True]),
    },
    optional={"note": _json_values, "verdict_": _scalars},
)
_bodies = st.one_of(
    _json_values.map(lambda value: json.dumps(value).encode()),
    _vote_like.map(lambda value: json.dumps(value).encode()),
    st.text(max_size=200).map(str.encode),  # not JSON at all, but valid UTF-8
)


def _is_valid_vote(body: bytes) -> bool:
    try:
        value = json.loads(body)
    except ValueError:
        return False
    tools = {TOOL, "llama-4-scout-fine-tuning-toolkit"}
    return (
        isinstance(value, dict)
        and set(value) == {"tool_id", "verdict"}
        and value["tool_id"] in tools
        and value["verdict"] in ("ship", "skip")
    )


def test_random_bodies_get_a_vote_or_a_json_4xx_never_a_5xx(
    pipeline: Pipeline, servers: ServerAddresses, token: str
) -> None:
    before = asyncio.run(stream_last_seq(servers))
    stored = 0
    with httpx.Client(timeout=10) as client:

        @settings(max_examples=200, database=None, deadline=None)
        @given(body=_bodies)
        def check(body: bytes) -> None:
            nonlocal stored
            response = client.post(
                pipeline.votes_url + VOTES,
                content=body,
                headers={"X-Voter-Token": token, "Content-Type": "application/json"},
            )
            if _is_valid_vote(body):
                assert response.status_code in (200, 202), (body, response.text)
                stored += response.status_code == 202
            else:
                assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
                assert isinstance(response.json()["error"], str)

        check()
    assert asyncio.run(stream_last_seq(servers)) == before + stored


# -- slow senders ---------------------------------------------------------------------------------------------


def open_slow(port_number: int, head: bytes) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port_number), timeout=30)
    conn.sendall(head)
    return conn


def closed_by_server(conn: socket.socket) -> bool:
    """True once the server hung up; what it sent before (an error answer, if any) is read and dropped."""
    conn.settimeout(0.05)
    try:
        while chunk := conn.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def test_a_request_head_that_never_ends_is_cut_off_and_writes_nothing(
    pipeline: Pipeline, servers: ServerAddresses, token: str
) -> None:
    with httpx.Client(timeout=10) as client:
        voter = new_voter(client, pipeline.votes_url)
    before = asyncio.run(stream_last_seq(servers))
    head = f"POST {VOTES} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Voter-Token: {token}\r\nContent-Ty".encode()
    slow = [open_slow(port(pipeline, "votes"), head) for _ in range(20)]
    try:
        with httpx.Client(timeout=10) as client:
            response = client.post(
                pipeline.votes_url + VOTES, json={"tool_id": TOOL, "verdict": "skip"}, headers={"X-Voter-Token": voter}
            )
            assert response.status_code == 202, response.text
        wait_until(lambda: all(closed_by_server(conn) for conn in slow), timeout=HEADER_TIMEOUT_MS / 1000 + 20)
    finally:
        for conn in slow:
            conn.close()
    assert asyncio.run(stream_last_seq(servers)) == before + 1  # the one complete vote, nothing else


def test_bodies_that_trickle_in_hold_up_no_other_vote_and_write_nothing_when_abandoned(
    pipeline: Pipeline, servers: ServerAddresses, token: str
) -> None:
    with httpx.Client(timeout=10) as client:
        voter = new_voter(client, pipeline.votes_url)  # a fresh ballot: each of its votes below is a change
    before = asyncio.run(stream_last_seq(servers))
    body = vote_body(verdict="ship")
    head = json_post(token, body)[: -len(body)]
    slow = [open_slow(port(pipeline, "votes"), head + body[:3]) for _ in range(30)]
    try:
        with httpx.Client(timeout=10) as client:
            for index, verdict in enumerate(["skip", "ship", "skip", "ship"]):
                for conn in slow:
                    conn.sendall(body[3 + index : 4 + index])  # a byte at a time, never the whole body
                response = client.post(
                    pipeline.votes_url + VOTES,
                    json={"tool_id": TOOL, "verdict": verdict},
                    headers={"X-Voter-Token": voter},
                )
                assert response.status_code == 202, response.text
    finally:
        for conn in slow:
            conn.close()  # the senders give up half-way
    time.sleep(1.0)  # let the server notice the abandoned bodies: a late publish would show below
    assert asyncio.run(stream_last_seq(servers)) == before + 4
    assert httpx.get(pipeline.votes_url + "/healthz", timeout=10).status_code == 200


def test_a_body_that_stalls_is_answered_408_and_writes_nothing(
    pipeline: Pipeline, servers: ServerAddresses, token: str
) -> None:
    before = asyncio.run(stream_last_seq(servers))
    body = vote_body()
    conn = open_slow(port(pipeline, "votes"), json_post(token, body)[:-5])
    try:
        conn.settimeout(10.0)
        try:
            response = read_response(conn)
        except TimeoutError:
            response = RawResponse(None, [], b"")
    finally:
        conn.close()
    assert asyncio.run(stream_last_seq(servers)) == before
    assert response.status == 408, "no answer to a stalled body within 10 s"
    assert response.json()["error"]
