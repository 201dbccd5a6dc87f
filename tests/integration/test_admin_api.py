"""The admin HTTP API: bearer token in constant time, off without one, background rebuild and verify."""

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.synthetic_catalog import synthetic_catalog
from contracts.catalog import Catalog, encode_catalog
from infra.stack.bootstrap import DEMO_CATALOG
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
        ("POST", "/catalog"),
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


def test_catalogue_loads_through_http_with_the_cli_s_rules(admin: Pipeline) -> None:
    big = synthetic_catalog(1_003, 3_002, seed=3)
    body = encode_catalog(big)
    assert len(body) > 3_000_000  # three times NATS's default max payload
    checked = call(admin, "POST", "/catalog?check=true", content=body)
    assert checked.status_code == 200, checked.text
    assert checked.json()["checked_only"] is True
    assert checked.json()["revision"] is None
    assert len(checked.json()["diff"]["comparisons_added"]) == 3_002
    assert checked.json()["voted"] == {LLAMA: 2}
    assert "removes 1 comparison with votes" in checked.json()["refused"]
    # The demo's comparisons hold the votes of the test above: removing them is refused, then forced.
    refused = call(admin, "POST", "/catalog", content=body)
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "comparisons_have_votes"
    assert f"{LLAMA} (2 ballots)" in refused.json()["detail"]
    loaded = call(admin, "POST", "/catalog?force=true", content=body)
    assert loaded.status_code == 200, loaded.text
    revision = loaded.json()["revision"]
    assert loaded.json()["written"] == 3_002 + 1_003 + 2 + 3  # and a removal for each of the demo's entries
    tool = big.tools[9]
    wait_until(lambda: httpx.get(f"{admin.read_url}/v1/tools/{tool.id}").status_code == 200)
    page = httpx.get(f"{admin.read_url}/v1/comparisons?limit=500").json()
    assert page["revision"] == revision
    assert len(page["comparisons"]) == 500
    last = big.comparisons[-1].id
    with httpx.Client() as client:
        voter = new_voter(client, admin.votes_url)
        wait_until(
            lambda: (
                client.post(
                    f"{admin.votes_url}/v1/comparisons/{last}/votes",
                    json={"tool_id": big.comparisons[-1].tools[0], "verdict": "ship"},
                    headers={"X-Voter-Token": voter},
                ).status_code
                == 202
            )
        )

    bad_line = call(admin, "POST", "/catalog", content=b'{"tools": [],\n "comparisons": [}')
    assert bad_line.status_code == 422
    assert "line 2" in bad_line.json()["detail"]
    unknown = Catalog(tools=big.tools[:1], comparisons=big.comparisons[:1])
    bad_tool = call(admin, "POST", "/catalog", content=encode_catalog(unknown))
    assert bad_tool.status_code == 422
    assert "$.comparisons[0].tools[1]" in bad_tool.json()["detail"]
    assert call(admin, "POST", "/catalog?check=maybe", content=body).status_code == 422
    assert httpx.get(f"{admin.read_url}/v1/comparisons?limit=1").json()["revision"] == revision, (
        "refusals change nothing"
    )

    restored = call(admin, "POST", "/catalog?force=true", content=DEMO_CATALOG.read_bytes())
    assert restored.status_code == 200, restored.text
