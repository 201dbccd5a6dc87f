"""The OpenAPI documents the running services serve (``/schema/openapi.json``) say how to use the API: which routes
need a voter and how to send one (security schemes), the Idempotency-Key, and the rate-limit and Retry-After headers
and 429/503 answers of every route that has them; and the headers a real answer carries are the documented ones."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.stack.servers import ServerAddresses
from tests.support import Pipeline, flush_redis, running_pipeline

CAST = ("post", "/v1/comparisons/{comparison_id}/votes")
RETRACT = ("delete", "/v1/comparisons/{comparison_id}/votes/{tool_id}")
VOTERS = ("post", "/v1/voters")
FORGET = ("delete", "/v1/voters/me")
STREAM = ("get", "/v1/comparisons/{comparison_id}/community/stream")
READYZ = ("get", "/readyz")
LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
RATE_LIMIT = {"RateLimit", "RateLimit-Policy"}
RATE_LIMITED = {"RateLimit", "RateLimit-Policy", "Retry-After"}


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    asyncio.run(flush_redis(servers))
    log_dir: Path = tmp_path_factory.mktemp("openapi-logs")
    limits = {"SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "2/1h,2", "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "1/1h,1"}
    with running_pipeline(servers, log_dir, SHIPSKIP_RATE_LIMITS="on", **limits) as running:
        yield running


@pytest.fixture(scope="module")
def documents(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    found = {}
    for service, url in (("votes", pipeline.votes_url), ("read", pipeline.read_url)):
        response = httpx.get(url + "/schema/openapi.json", timeout=10)
        assert response.status_code == 200, response.text
        found[service] = response.json()
    return found


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    }


def _headers(operation: dict[str, Any], status: int) -> dict[str, dict[str, Any]]:
    headers: dict[str, dict[str, Any]] = operation["responses"][str(status)].get("headers", {})
    return headers


def test_a_voter_is_named_by_the_token_header_or_the_cookie(documents: dict[str, dict[str, Any]]) -> None:
    votes = documents["votes"]
    assert votes["components"]["securitySchemes"] == {
        "VoterToken": {
            "type": "apiKey",
            "in": "header",
            "name": "X-Voter-Token",
            "description": votes["components"]["securitySchemes"]["VoterToken"]["description"],
        },
        "VoterCookie": {
            "type": "apiKey",
            "in": "cookie",
            "name": "shipskip_voter",
            "description": votes["components"]["securitySchemes"]["VoterCookie"]["description"],
        },
    }
    operations = _operations(votes)
    # Either scheme: two requirements, one scheme each.
    needing_a_voter = {key for key, operation in operations.items() if operation.get("security")}
    assert needing_a_voter == {CAST, RETRACT, FORGET}
    for key in needing_a_voter:
        assert operations[key]["security"] == [{"VoterToken": []}, {"VoterCookie": []}]
        assert "401" in operations[key]["responses"]
    # The token comes from POST /v1/voters, in its body and its cookie.
    assert "Set-Cookie" in _headers(operations[VOTERS], 201)
    assert "Max-Age=0" in _headers(operations[FORGET], 202)["Set-Cookie"]["description"], "forgetting clears it"
    assert "voter_forgotten" in operations[FORGET]["description"]
    assert "voter_token" in str(votes["components"]["schemas"]["VoterIssued"])
    assert "X-Voter-Token" in votes["info"]["description"]


def test_the_vote_routes_take_an_idempotency_key(documents: dict[str, dict[str, Any]]) -> None:
    for service, document in documents.items():
        for key, operation in _operations(document).items():
            header_parameters = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
            if service == "votes" and key in (CAST, RETRACT):
                parameter = header_parameters["Idempotency-Key"]
                assert parameter["required"] is False
                assert parameter["schema"] == {"type": "string", "minLength": 1, "maxLength": 255}
                assert "retry" in parameter["description"]
            else:
                assert "Idempotency-Key" not in header_parameters, key


def test_429_and_503_answers_and_their_headers_are_documented_on_every_route_that_has_them(
    documents: dict[str, dict[str, Any]],
) -> None:
    votes, read = _operations(documents["votes"]), _operations(documents["read"])
    # What the code can answer: the rate limiter guards token issue, votes, retractions and forgets, and the read
    # API the streams of one address; a vote or a forget not stored is a 503, as is a full or stopping read
    # process's stream, and /readyz when a check fails.
    assert {key for key, operation in votes.items() if "429" in operation["responses"]} == {
        VOTERS,
        CAST,
        RETRACT,
        FORGET,
    }
    assert {key for key, operation in read.items() if "429" in operation["responses"]} == {STREAM}
    assert {key for key, operation in votes.items() if "503" in operation["responses"]} == {
        CAST,
        RETRACT,
        FORGET,
        READYZ,
    }
    assert {key for key, operation in read.items() if "503" in operation["responses"]} == {STREAM, READYZ}

    for key in (VOTERS, CAST, RETRACT, FORGET):
        limited = _headers(votes[key], 429)
        assert set(limited) == RATE_LIMITED, key
        assert all(header["required"] for header in limited.values()), key
        assert votes[key]["responses"]["429"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    for key in (CAST, RETRACT):
        for status in (200, 202, 422):
            documented = _headers(votes[key], status)
            assert set(documented) == RATE_LIMIT, (key, status)
            assert not any(header["required"] for header in documented.values()), "absent with limits off"
        assert set(_headers(votes[key], 503)) == {"Retry-After", *RATE_LIMIT}
        assert _headers(votes[key], 503)["Retry-After"]["required"] is True
    assert set(_headers(votes[VOTERS], 201)) == {"Set-Cookie", *RATE_LIMIT}
    assert set(_headers(votes[FORGET], 202)) == {"Set-Cookie", *RATE_LIMIT}
    assert set(_headers(votes[FORGET], 503)) == {"Retry-After", *RATE_LIMIT}
    assert set(_headers(read[STREAM], 503)) == {"Retry-After"}
    assert set(_headers(read[STREAM], 429)) == {"Retry-After"}
    # /readyz answers 503 without Retry-After: a probe asks again on its own schedule.
    assert _headers(votes[READYZ], 503) == {} == _headers(read[READYZ], 503)


def test_real_answers_carry_the_documented_headers(pipeline: Pipeline, documents: dict[str, dict[str, Any]]) -> None:
    votes = documents["votes"]
    with httpx.Client(timeout=10) as client:
        issued = [client.post(pipeline.votes_url + "/v1/voters") for _ in range(3)]
        assert [answer.status_code for answer in issued] == [201, 201, 429]
        token = issued[0].json()["voter_token"]
        path = f"{pipeline.votes_url}/v1/comparisons/{LLAMA}/votes"
        voted = [
            client.post(path, json={"tool_id": TOOL, "verdict": verdict}, headers={"X-Voter-Token": token})
            for verdict in ("ship", "skip")
        ]
        assert [answer.status_code for answer in voted] == [202, 429]
        # A forget counts against the voter's limit as a vote does: this voter's is used up.
        forget = client.delete(pipeline.votes_url + "/v1/voters/me", headers={"X-Voter-Token": token})
        assert (forget.status_code, forget.json()["error"]) == (429, "rate_limited"), forget.text
    with httpx.Client(timeout=10, cookies={"shipskip_voter": issued[1].json()["voter_token"]}) as browser:
        by_cookie = browser.post(path, json={"tool_id": TOOL, "verdict": "ship"})
        assert by_cookie.status_code == 202, by_cookie.text
    # With the limits on, every documented header is sent, the optional ones too (httpx gives names in lower case).
    for answer, key in ((issued[0], VOTERS), (issued[2], VOTERS), (voted[0], CAST), (voted[1], CAST), (forget, FORGET)):
        documented = {name.lower() for name in _headers(_operations(votes)[key], answer.status_code)}
        assert documented, (key, answer.status_code)
        assert documented <= set(answer.headers.keys()), (key, answer.status_code, answer.headers)
    assert issued[0].headers["set-cookie"].startswith("shipskip_voter=")
    assert int(voted[1].headers["retry-after"]) >= 1
