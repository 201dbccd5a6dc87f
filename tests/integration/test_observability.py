"""Metrics, health and logs of the three processes, scraped and read after real votes, refusals and reads.

Each check compares a scrape before and after with what the test did in between, so counts are exact.
"""

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest

from infra.stack.servers import ServerAddresses
from tests.integration.metrics_text import Scrape, scrape
from tests.support import (
    Pipeline,
    flush_redis,
    new_voter,
    publish_raw,
    send_vote,
    start_votes_service,
    stream_last_seq,
    wait_until,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
CAST = "/v1/comparisons/{comparison_id}/votes"
RETRACT = "/v1/comparisons/{comparison_id}/votes/{tool_id}"
COMMUNITY = "/v1/comparisons/{comparison_id}/community"


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_votes_metrics_count_accepted_unchanged_and_refused_votes_by_reason(
    pipeline: Pipeline, client: httpx.Client
) -> None:
    url, ops = pipeline.votes_url, pipeline.votes_ops_url
    token = new_voter(client, url)
    before = scrape(ops)

    assert send_vote(client, url, token, "ship", LLAMA, TOOL).status_code == 202
    assert send_vote(client, url, token, "skip", LLAMA, TOOL).status_code == 202
    assert send_vote(client, url, token, "skip", LLAMA, TOOL).status_code == 200  # the ballot says so already
    assert send_vote(client, url, token, None, LLAMA, TOOL).status_code == 202
    assert send_vote(client, url, token, "ship", LLAMA, "no-such-tool").status_code == 404
    assert send_vote(client, url, token, "ship", LLAMA, "no-such-tool").status_code == 404
    with httpx.Client(timeout=10) as cookieless:  # the client above holds the voter cookie
        assert send_vote(cookieless, url, None, "ship", LLAMA, TOOL).status_code == 401
    bad_json = client.post(
        f"{url}/v1/comparisons/{LLAMA}/votes", content=b"{nope", headers={"X-Voter-Token": token, **JSON}
    )
    assert bad_json.status_code == 400
    assert send_vote(client, url, token, None, LLAMA, "no-such-tool").status_code == 404
    assert client.get(f"{url}/v1/comparisons/{LLAMA}/no/such/path/12345").status_code == 404

    after = scrape(ops)
    metric = "shipskip_votes_accepted_total"
    assert delta(after, before, metric, action="cast") == 2
    assert delta(after, before, metric, action="retract") == 1
    assert delta(after, before, "shipskip_votes_unchanged_total", action="cast") == 1
    refused = "shipskip_votes_refused_total"
    assert delta(after, before, refused, action="cast", reason="unknown_tool") == 2
    assert delta(after, before, refused, action="cast", reason="voter_token_missing") == 1
    assert delta(after, before, refused, action="cast", reason="malformed_json") == 1
    assert delta(after, before, refused, action="retract", reason="unknown_tool") == 1
    assert delta(after, before, refused) == 5
    # Each publish is timed: the three votes stored (the unchanged one was never published).
    assert delta(after, before, "shipskip_publish_seconds_count") == 3
    assert after.value("shipskip_publish_seconds_sum") > before.value("shipskip_publish_seconds_sum")

    requests = "shipskip_http_requests_total"
    assert delta(after, before, requests, route=CAST, method="POST", status="202") == 2
    assert delta(after, before, requests, route=CAST, method="POST", status="200") == 1
    assert delta(after, before, requests, route=CAST, method="POST", status="404") == 2
    assert delta(after, before, requests, route=RETRACT, method="DELETE", status="202") == 1
    assert delta(after, before, requests, route="unmatched", method="GET", status="404") == 1
    # Bounded labels: templates only, never a client's raw path.
    routes = after.label_values(requests, "route")
    assert "unmatched" in routes
    assert all("no-such" not in route and "12345" not in route and LLAMA not in route for route in routes), routes
    assert delta(after, before, "shipskip_http_request_duration_seconds_count", route=CAST) == 7


JSON = {"Content-Type": "application/json"}


def test_rate_limit_hits_are_counted_by_limit(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline
) -> None:
    asyncio.run(flush_redis(servers))
    tight = {
        "SHIPSKIP_RATE_LIMITS": "on",
        "SHIPSKIP_TRUSTED_PROXIES": "127.0.0.1",
        "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "2/1h,2",
        "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "1/1h,1",
    }
    votes = start_votes_service(servers, tmp_path_factory.mktemp("limited"), **tight)
    try:
        with httpx.Client(timeout=10) as client:
            before = scrape(votes.ops_url)
            token = new_voter(client, votes.url, "198.51.100.77")
            again = client.post(votes.url + "/v1/voters", headers={"X-Forwarded-For": "198.51.100.77"})
            assert again.status_code == 429
            statuses = [send_vote(client, votes.url, token, v, LLAMA, TOOL).status_code for v in ("ship", "skip")]
            assert statuses == [202, 202]
            for _ in range(3):
                assert send_vote(client, votes.url, token, "ship", LLAMA, TOOL).status_code == 429
            after = scrape(votes.ops_url)
    finally:
        votes.stop()
    assert delta(after, before, "shipskip_rate_limit_hits_total", limit="voter") == 3
    assert delta(after, before, "shipskip_rate_limit_hits_total", limit="voter-tokens") == 1
    assert delta(after, before, "shipskip_votes_refused_total", action="cast", reason="rate_limited") == 3
    assert delta(after, before, "shipskip_votes_accepted_total", action="cast") == 2


def test_read_metrics_count_reads_streams_and_the_views_position(pipeline: Pipeline, client: httpx.Client) -> None:
    url, ops = pipeline.read_url, pipeline.read_ops_url
    before = scrape(ops)
    for _ in range(5):
        assert client.get(f"{url}/v1/comparisons/{LLAMA}/community").status_code == 200
    assert client.get(f"{url}/v1/comparisons/nope-nope/community").status_code == 404
    after = scrape(ops)
    requests = "shipskip_http_requests_total"
    assert delta(after, before, requests, route=COMMUNITY, method="GET", status="200") == 5
    assert delta(after, before, requests, route=COMMUNITY, method="GET", status="404") == 1
    assert after.has("shipskip_view_age_seconds")
    assert after.value("shipskip_view_reloads_total") >= 1

    # The view's position follows the projector after a vote.
    token = new_voter(client, pipeline.votes_url)
    assert send_vote(client, pipeline.votes_url, token, "ship", LLAMA, TOOL).status_code == 202
    position = client.get(f"{url}/v1/comparisons/{LLAMA}/community").json()["position"]
    wait_until(lambda: scrape(ops).value("shipskip_view_position") >= position, timeout=20)

    # Open streams are counted while open, and no more once closed.
    assert scrape(ops).value("shipskip_sse_clients") == 0
    streams = [open_stream(url, f"/v1/comparisons/{LLAMA}/community/stream") for _ in range(2)]
    try:
        wait_until(lambda: scrape(ops).value("shipskip_sse_clients") == 2, timeout=20)
    finally:
        for stream in streams:
            stream.close()
    wait_until(lambda: scrape(ops).value("shipskip_sse_clients") == 0, timeout=20)


def open_stream(base_url: str, path: str) -> socket.socket:
    """An event stream held open on a plain socket until closed, once its first event arrived."""
    host, port = base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=20)
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    received = b""
    while b"data:" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"the stream ended: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    return connection


def test_projector_metrics_count_batches_dead_letters_and_the_lag_drains(
    pipeline: Pipeline, client: httpx.Client, servers: ServerAddresses
) -> None:
    url = pipeline.projector_url
    # Earlier tests' last votes may still be gathering in the projector's next batch (SHIPSKIP_BATCH_LINGER_MS):
    # counted from here they would be this test's. Its position and its counts move together, after each commit.
    last = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: scrape(url).value("shipskip_projector_position") >= last, timeout=30)
    before = scrape(url)
    token = new_voter(client, pipeline.votes_url)
    for verdict in ("ship", "skip", "ship"):
        assert send_vote(client, pipeline.votes_url, token, verdict, LLAMA, TOOL).status_code == 202
    asyncio.run(publish_raw(servers, [(f"votes.v1.{LLAMA}", b"not an event")]))

    def folded_all() -> bool:
        return delta(scrape(url), before, "shipskip_projector_events_total") == 4

    wait_until(folded_all, timeout=30)
    after = scrape(url)
    assert delta(after, before, "shipskip_projector_dead_letters_total") == 1
    assert delta(after, before, "shipskip_projector_batch_size_sum") == 4
    assert delta(after, before, "shipskip_projector_fold_seconds_count") == delta(
        after, before, "shipskip_projector_batch_size_count"
    )
    # Everything folded: no lag once the last ack is in.
    wait_until(lambda: scrape(url).value("shipskip_projector_lag_events") == 0, timeout=20)
    final = scrape(url)
    assert final.value("shipskip_projector_lag_seconds") == 0
    assert final.value("shipskip_projector_position") >= 4
    assert final.has("process_resident_memory_bytes")


@pytest.mark.parametrize("service", ["votes", "read", "projector"])
def test_healthz_and_readyz_answer_with_every_check(pipeline: Pipeline, service: str) -> None:
    url = pipeline.projector_url if service == "projector" else pipeline.processes[service].url  # type: ignore[index]
    health = httpx.get(url + "/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = httpx.get(url + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert body["problems"] == []
    expected = {"votes": {"nats", "redis"}, "read": {"nats", "postgres", "view"}, "projector": {"nats", "postgres"}}
    assert body["checks"] == dict.fromkeys(expected[service], "ok")


def test_the_health_answers_keep_their_fields(pipeline: Pipeline) -> None:
    votes = httpx.get(pipeline.votes_url + "/healthz", timeout=10).json()
    assert votes["status"] == "ok"
    assert votes["limits"] == "shared"
    read = httpx.get(pipeline.read_url + "/healthz", timeout=10).json()
    assert {"status", "position", "reloads", "streams"} <= read.keys()


def test_a_request_id_is_taken_when_safe_returned_and_in_the_log_line(pipeline: Pipeline, client: httpx.Client) -> None:
    url = pipeline.votes_url
    given = "trace-7f3a.b_c:42"
    answer = client.get(f"{url}/v1/comparisons/{LLAMA}/nope", headers={"X-Request-Id": given})
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] == given

    # Too long, or characters a log reader could trip on: replaced by a new id.
    for unsafe in ("x" * 65, "a b", 'q"uote', "semi;colon"):
        replaced = client.get(f"{url}/healthz", headers={"X-Request-Id": unsafe})
        assert replaced.headers["x-request-id"] != unsafe
        assert len(replaced.headers["x-request-id"]) == 16
    # Without one, every answer gets a new one.
    first = client.get(f"{url}/healthz").headers["x-request-id"]
    second = client.get(f"{url}/healthz").headers["x-request-id"]
    assert first != second

    # The refusal above was logged (SHIPSKIP_ACCESS_LOG=errors by default) as one JSON line carrying the id.
    log_path = pipeline.processes["votes"].log_path

    def logged() -> list[dict[str, object]]:
        return [line for line in json_lines(log_path) if line.get("request_id") == given]

    wait_until(lambda: bool(logged()), timeout=10)
    (line,) = logged()
    assert line["status"] == 404
    assert line["route"] == "unmatched"
    assert line["service"] == "votes"
    assert line["level"] == "info"
    assert isinstance(line["ts"], str)
    assert str(line["ts"]).endswith("Z")
    # Successful requests are not logged by default.
    assert not [line for line in json_lines(log_path) if line.get("request_id") in (first, second)]


def test_the_read_api_and_projector_return_request_ids_too(pipeline: Pipeline, client: httpx.Client) -> None:
    for url in (pipeline.read_url, pipeline.projector_url):
        answer = client.get(url + "/healthz", headers={"X-Request-Id": "abc-123"})
        assert answer.headers["x-request-id"] == "abc-123"
    unknown = client.get(pipeline.projector_url + "/nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found"
    assert client.post(pipeline.projector_url + "/metrics").status_code == 405


CHECKS = {"votes": {"nats", "redis"}, "read": {"nats", "postgres", "view"}, "projector": {"nats", "postgres"}}


@pytest.mark.parametrize("service", ["votes", "read"])
def test_metrics_are_on_the_ops_port_only_and_health_on_both(pipeline: Pipeline, service: str) -> None:
    process = pipeline.processes[service]  # type: ignore[index]
    assert process.ops_port not in (0, process.port)
    public = httpx.get(process.url + "/metrics", timeout=10)
    assert public.status_code == 404, "anyone reaching the public port could scrape it"
    assert "/metrics" not in httpx.get(process.url + "/schema/openapi.json", timeout=10).json()["paths"]
    scraped = scrape(process.ops_url)
    assert scraped.has("shipskip_http_requests_total")
    # Each scrape runs the readiness checks and records them.
    assert {check: scraped.value("shipskip_readiness", check=check) for check in CHECKS[service]} == dict.fromkeys(
        CHECKS[service], 1.0
    )
    # /healthz and /readyz: the same answers on both ports (the load balancer's, the operators').
    for path in ("/healthz", "/readyz"):
        on_public, on_ops = httpx.get(process.url + path, timeout=10), httpx.get(process.ops_url + path, timeout=10)
        assert on_public.status_code == on_ops.status_code == 200, (path, on_ops.text)
        assert on_ops.headers["content-type"].startswith("application/json")
        assert on_public.json().keys() == on_ops.json().keys()
        assert on_ops.json()["status"] == on_public.json()["status"]
    # One worker: the one that answers on the public port.
    pids = {httpx.get(url + "/healthz", timeout=10).json()["pid"] for url in (process.url, process.ops_url)}
    assert len(pids) == 1
    assert httpx.get(process.ops_url + "/v1/comparisons", timeout=10).status_code == 404


def test_the_projector_records_its_readiness_checks_too(pipeline: Pipeline) -> None:
    scraped = scrape(pipeline.projector_url)
    assert {check: scraped.value("shipskip_readiness", check=check) for check in CHECKS["projector"]} == dict.fromkeys(
        CHECKS["projector"], 1.0
    )
