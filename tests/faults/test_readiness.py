"""/readyz while a server is stopped: 503 naming it, from every process that needs it; 200 again once it is back.
The votes API can do without Redis (limits per process): for it, Redis stopped is 200 "degraded", naming Redis.

Stops the session's own servers, one at a time, each restarted in a ``finally`` (as tests/faults/test_outages.py).
"""

from collections.abc import Iterator

import httpx
import pytest

from infra.stack.servers import EmbeddedServers, ServerAddresses, ServerName
from tests.integration.metrics_text import scrape
from tests.support import Pipeline, running_pipeline, wait_until

NEEDS: dict[ServerName, set[str]] = {
    "nats": {"votes", "read", "projector"},
    "postgres": {"read", "projector"},
    "redis": {"votes"},
}
"""Which processes check which server."""
TOLERATED: dict[str, set[ServerName]] = {"votes": {"redis"}}
"""Servers a process works on without: their outage makes it degraded (200), not unready (503)."""


@pytest.fixture(scope="module")
def pipeline(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("readiness")) as running:
        yield running


def urls(pipeline: Pipeline) -> dict[str, str]:
    return {"votes": pipeline.votes_url, "read": pipeline.read_url, "projector": pipeline.projector_url}


def ops_urls(pipeline: Pipeline) -> dict[str, str]:
    """Where each process serves /metrics (and /readyz again)."""
    return {"votes": pipeline.votes_ops_url, "read": pipeline.read_ops_url, "projector": pipeline.projector_url}


def recorded(url: str, check: str) -> float:
    """``shipskip_readiness{check}`` as a scrape records it (the scrape runs the checks)."""
    scraped = scrape(url)
    assert scraped.has("shipskip_readiness", check=check), scraped.text
    return scraped.value("shipskip_readiness", check=check)


def readiness(url: str) -> tuple[int, dict[str, object]]:
    answer = httpx.get(url + "/readyz", timeout=10)
    body: dict[str, object] = answer.json()
    return answer.status_code, body


def all_ready(pipeline: Pipeline) -> bool:
    return all(readiness(url)[1]["status"] == "ready" for url in urls(pipeline).values())


@pytest.mark.parametrize("server", ["redis", "nats", "postgres"])
def test_readyz_names_a_stopped_server_and_recovers(
    pipeline: Pipeline, stack: EmbeddedServers, server: ServerName
) -> None:
    wait_until(lambda: all_ready(pipeline), timeout=60)
    try:
        stack.stop_server(server)
        for name, url in urls(pipeline).items():
            if name in NEEDS[server]:
                tolerated = server in TOLERATED.get(name, set())
                expected = (200, "degraded") if tolerated else (503, "not_ready")

                def names_it(url: str = url, expected: tuple[int, str] = expected) -> bool:
                    status, body = readiness(url)
                    return (status, body["status"]) == expected and body["checks"][server] != "ok"  # type: ignore[index]

                wait_until(names_it, timeout=30)
                status, body = readiness(url)
                assert (status, body["status"]) == expected, (name, body)
                problems = body["problems"]
                assert isinstance(problems, list)
                assert any(problem.startswith(f"{server}: ") for problem in problems), body
                # The ops port answers alike, and its metrics say which check fails.
                assert readiness(ops_urls(pipeline)[name])[0] == expected[0]
                assert recorded(ops_urls(pipeline)[name], server) == 0
            else:
                status, body = readiness(url)
                assert status == 200, (name, body)
            # Alive all the same: /healthz says the process runs, whatever its servers do.
            assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        stack.start_server(server)
    wait_until(lambda: all_ready(pipeline), timeout=60)
    for url in urls(pipeline).values():
        status, body = readiness(url)
        assert body["problems"] == []
    for name, url in ops_urls(pipeline).items():
        if name in NEEDS[server]:
            assert recorded(url, server) == 1
