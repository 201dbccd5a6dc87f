"""The admin API with Postgres or NATS stopped under it: 503 with a JSON error naming the server, never a 500;
and the same requests answer again once the server is back."""

from collections.abc import Iterator

import httpx
import pytest

from infra.stack.servers import EmbeddedServers, ServerAddresses
from tests.support import Pipeline, running_pipeline, wait_until

TOKEN = "admin-token-for-the-outage-tests-0123"
LLAMA = "llama-4-scout-vs-windsurf-swe-1"
# What each server's absence stops: the requests that reach it before anything else could refuse them.
NEEDS = {
    "postgres": [
        ("GET", "/status", None),
        ("GET", "/dead-letters", None),
        ("GET", "/dead-letters/1", None),
        ("POST", "/dead-letters/retry", {}),
        ("POST", "/void", {"voter_id": "ab" * 16, "reason": "x"}),
    ],
    "nats": [
        ("GET", "/status", None),
        ("GET", f"/voters?comparison={LLAMA}", None),
        ("POST", "/void", {"voter_id": "ab" * 16, "reason": "x"}),
    ],
}


@pytest.fixture(scope="module")
def admin(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("admin-outage"), SHIPSKIP_ADMIN_TOKEN=TOKEN) as pipeline:
        yield pipeline


def call(pipeline: Pipeline, method: str, path: str, body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{pipeline.read_url}/admin{path}"
    return httpx.request(method, url, headers=headers, json=body, timeout=30)


@pytest.mark.parametrize(("server", "named"), [("postgres", "Postgres"), ("nats", "NATS")])
def test_a_stopped_server_is_a_503_naming_it(admin: Pipeline, stack: EmbeddedServers, server: str, named: str) -> None:
    try:
        stack.stop_server(server)  # type: ignore[arg-type]
        for method, path, body in NEEDS[server]:
            answer = call(admin, method, path, body)
            assert answer.status_code == 503, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"] == "unavailable"
            assert named in answer.json()["detail"]
    finally:
        stack.start_server(server)  # type: ignore[arg-type]
    wait_until(lambda: call(admin, "GET", "/status", None).status_code == 200, timeout=60, interval=0.5)
    assert call(admin, "GET", "/dead-letters", None).status_code == 200
