"""The admin HTTP API: bearer token in constant time, off without one, background rebuild and verify."""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from infra.stack.servers import ServerAddresses
from tests.support import Pipeline, new_voter, projected_position, running_pipeline, stream_last_seq, wait_until

TOKEN = "admin-token-for-tests-0123456789"
LLAMA = "llama-4-scout-vs-windsurf-swe-1"


@pytest.fixture(scope="module")
def admin(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("admin-logs"), SHIPSKIP_ADMIN_TOKEN=TOKEN) as pipeline:
        yield pipeline


def call(pipeline: Pipeline, method: str, path: str, token: str | None = TOKEN, **kwargs: Any) -> httpx.Response:
    """``token`` is sent as a bearer token; one with a space already names its own scheme."""
    headers = {}
    if token is not None:
        headers["Authorization"] = token if " " in token else f"Bearer {token}"
    return httpx.request(method, f"{pipeline.read_url}/admin{path}", headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/status"),
        ("POST", "/rebuild"),
        ("POST", "/verify"),
        ("POST", "/void"),
        ("GET", "/voters"),
        ("GET", "/dead-letters"),
        ("GET", "/dead-letters/1"),
        ("POST", "/dead-letters/retry"),
        ("POST", "/dead-letters/1/discard"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", TOKEN[:-1], TOKEN + "x", f"Basic {TOKEN}"])
def test_missing_and_wrong_tokens_are_refused(admin: Pipeline, method: str, path: str, token: str | None) -> None:
    response = call(admin, method, path, token)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_the_admin_api_is_off_without_a_token(pipeline: Pipeline) -> None:
    response = httpx.get(f"{pipeline.read_url}/admin/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404


def test_status_rebuild_and_verify_through_http(admin: Pipeline, servers: ServerAddresses) -> None:
    with httpx.Client() as client:
        voter = new_voter(client, admin.votes_url)
    for tool, verdict in (("windsurf-swe-1", "ship"), ("llama-4-scout-fine-tuning-toolkit", "skip")):
        response = httpx.post(
            f"{admin.votes_url}/v1/comparisons/{LLAMA}/votes",
            json={"tool_id": tool, "verdict": verdict},
            headers={"X-Voter-Token": voter},
        )
        assert response.status_code == 202
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head)

    status = call(admin, "GET", "/status").json()
    assert status["stream_head"] == status["projector_position"] == head
    assert status["ballots"] == 2

    started = call(admin, "POST", "/rebuild", json={"comparison_id": LLAMA})
    assert started.status_code == 202, started.text
    assert started.json()["kind"] == "rebuild"
    wait_until(lambda: call(admin, "GET", "/rebuild").json()["state"] != "running", timeout=60)
    finished = call(admin, "GET", "/rebuild").json()
    assert finished["state"] == "done", finished
    assert finished["done"] == 2

    assert call(admin, "POST", "/verify").status_code == 202
    wait_until(lambda: call(admin, "GET", "/verify").json()["state"] != "running", timeout=60)
    verified = call(admin, "GET", "/verify").json()
    assert verified["state"] == "done"
    assert verified["result"]["identical"] is True

    bad = call(admin, "POST", "/void", json={"voter_id": "nope", "reason": "x"})
    assert bad.status_code == 422
    assert call(admin, "POST", "/rebuild", content=b"{not json").status_code == 400
