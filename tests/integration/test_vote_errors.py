"""Every refusal of the votes API: a clear JSON 4xx naming the problem, and nothing written to the stream."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infra.stack.servers import ServerAddresses
from tests.support import Pipeline, new_voter, stream_last_seq

COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"


@pytest.fixture(scope="module")
def token(pipeline: Pipeline) -> str:
    with httpx.Client() as client:
        return new_voter(client, pipeline.votes_url)


@pytest.fixture
def unchanged_stream(servers: ServerAddresses) -> Iterator[None]:
    before = asyncio.run(stream_last_seq(servers))
    yield
    assert asyncio.run(stream_last_seq(servers)) == before, "a refused request wrote to the stream"


def vote(
    client: httpx.Client,
    pipeline: Pipeline,
    token: str | None,
    body: bytes,
    headers: dict[str, str] | None = None,
    comparison: str = COMPARISON,
) -> httpx.Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        headers["X-Voter-Token"] = token
    return client.post(f"{pipeline.votes_url}/v1/comparisons/{comparison}/votes", content=body, headers=headers)


GOOD = json.dumps({"tool_id": TOOL, "verdict": "ship"}).encode()

CASES = [
    ("missing token", None, GOOD, {}, 401, "voter_token_missing"),
    ("forged token", "AAAA.BBBB", GOOD, {}, 401, "voter_token_refused"),
    ("unknown comparison", "T", GOOD, {"comparison": "no-such-page"}, 404, "unknown_comparison"),
    (
        "tool not in comparison",
        "T",
        json.dumps({"tool_id": "smolvlm2-2b", "verdict": "ship"}).encode(),
        {},
        404,
        "unknown_tool",
    ),
    ("malformed JSON", "T", b'{"tool_id": ', {}, 400, "malformed_json"),
    ("not JSON", "T", GOOD, {"headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
    (
        "form body",
        "T",
        b"tool_id=x",
        {"headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        415,
        "unsupported_media_type",
    ),
    ("missing field", "T", b'{"tool_id": "windsurf-swe-1"}', {}, 422, "invalid_vote"),
    (
        "unknown field",
        "T",
        b'{"tool_id": "windsurf-swe-1", "verdict": "ship", "weight": 9}',
        {},
        422,
        "invalid_vote",
    ),
    ("other verdict", "T", b'{"tool_id": "windsurf-swe-1", "verdict": "maybe"}', {}, 422, "invalid_vote"),
    ("coercible type", "T", b'{"tool_id": 7, "verdict": "ship"}', {}, 422, "invalid_vote"),
    ("not an object", "T", b'["windsurf-swe-1", "ship"]', {}, 422, "invalid_vote"),
    ("id not a slug", "T", b'{"tool_id": "../etc/passwd", "verdict": "ship"}', {}, 422, "invalid_vote"),
    (
        "body over 4 KiB",
        "T",
        b'{"tool_id": "windsurf-swe-1", "verdict": "ship", "pad": "' + b"x" * 5000 + b'"}',
        {},
        413,
        "body_too_large",
    ),
    (
        "idempotency key too long",
        "T",
        GOOD,
        {"headers": {"Idempotency-Key": "k" * 256}},
        400,
        "invalid_idempotency_key",
    ),
]


@pytest.mark.usefixtures("unchanged_stream")
@pytest.mark.parametrize(("case", "who", "body", "options", "status", "error"), CASES, ids=[c[0] for c in CASES])
def test_refusals(
    pipeline: Pipeline,
    token: str,
    case: str,
    who: str | None,
    body: bytes,
    options: dict[str, Any],
    status: int,
    error: str,
) -> None:
    with httpx.Client() as client:
        response = vote(client, pipeline, token if who == "T" else who, body, **options)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    payload = response.json()
    assert payload["error"] == error
    assert payload["detail"]


@pytest.mark.usefixtures("unchanged_stream")
def test_retracting_a_tool_outside_the_comparison_is_404(pipeline: Pipeline, token: str) -> None:
    with httpx.Client() as client:
        response = client.delete(
            f"{pipeline.votes_url}/v1/comparisons/{COMPARISON}/votes/smolvlm2-2b",
            headers={"X-Voter-Token": token},
        )
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_tool"


@pytest.mark.usefixtures("unchanged_stream")
def test_unknown_routes_and_methods_answer_json(pipeline: Pipeline) -> None:
    with httpx.Client() as client:
        missing = client.get(f"{pipeline.votes_url}/v2/nothing")
        wrong_method = client.get(f"{pipeline.votes_url}/v1/comparisons/{COMPARISON}/votes")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"
