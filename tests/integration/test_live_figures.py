"""Live community figures through real processes: the SSE stream, several read APIs, ETags and 304s, and a view
that recovers after a read-API restart and after a NATS restart."""

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from infra.stack.processes import ServiceProcess, start_service
from infra.stack.servers import EmbeddedServers, ServerAddresses, free_port
from tests.support import Pipeline, new_voter, random_key, running_pipeline, wait_until

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"  # in both comparisons


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    # Rate limits off: these tests cast votes quickly from one address, which is not what they are about.
    with running_pipeline(servers, tmp_path_factory.mktemp("logs"), SHIPSKIP_RATE_LIMITS="off") as running:
        yield running


@contextmanager
def read_api(pipeline: Pipeline, **env: str) -> Iterator[ServiceProcess]:
    """One more read-API process on a free port, stopped on the way out."""
    process = start_service("read", {**pipeline.env, **env}, pipeline.log_dir, free_port())
    try:
        yield process
    finally:
        process.stop()


class Voter:
    """One voter flipping one tool between ship and skip, so that every vote changes the figures."""

    def __init__(self, client: httpx.Client, pipeline: Pipeline, comparison: str) -> None:
        self._client = client
        self._url = f"{pipeline.votes_url}/v1/comparisons/{comparison}/votes"
        self._token = new_voter(client, pipeline.votes_url)
        self.verdict = "skip"

    def flip(self) -> str:
        """Vote the other way; returns the new verdict."""
        assert self.try_flip(random_key()), "the vote was not accepted"
        return self.verdict

    def try_flip(self, idempotency_key: str) -> bool:
        """One attempt; retried with the same key, the vote is stored once however many attempts it took."""
        verdict = "ship" if self.verdict == "skip" else "skip"
        response = self._client.post(
            self._url,
            json={"tool_id": TOOL, "verdict": verdict},
            headers={"X-Voter-Token": self._token, "Idempotency-Key": idempotency_key},
        )
        if response.status_code != 202:
            # Not stored (503), or not known (504): either way the same key again.
            assert response.status_code in (503, 504), response.text
            return False
        self.verdict = verdict
        return True


class EventStream:
    """A Server-Sent Events client that reads one block at a time (a read stalling for 15 s fails the test)."""

    def __init__(self, client: httpx.Client, url: str, last_event_id: str | None = None) -> None:
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        self._context = client.stream("GET", url, headers=headers, timeout=httpx.Timeout(15.0))
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def next_block(self) -> dict[str, str]:
        """The fields of the next block; a comment line comes back as {"comment": ...}."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    def next_event(self, timeout: float = 20.0) -> tuple[int, dict[str, Any]]:
        """The next event with data: (its id, its figures). Keep-alive comments do not count as news."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            block = self.next_block()
            if "data" in block:
                return int(block["id"]), json.loads(block["data"])
        raise AssertionError(f"no event within {timeout}s")


@contextmanager
def event_stream(client: httpx.Client, url: str, last_event_id: str | None = None) -> Iterator[EventStream]:
    stream = EventStream(client, url, last_event_id)
    try:
        yield stream
    finally:
        stream.close()


def ships(figures: dict[str, Any]) -> int:
    return next(int(tool["ship"]) for tool in figures["tools"] if tool["tool_id"] == TOOL)


def community(client: httpx.Client, read_url: str, comparison: str) -> httpx.Response:
    response = client.get(f"{read_url}/v1/comparisons/{comparison}/community")
    assert response.status_code == 200, response.text
    return response


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


def test_an_open_stream_gets_the_figures_at_once_then_every_vote(pipeline: Pipeline, client: httpx.Client) -> None:
    voter = Voter(client, pipeline, LLAMA)
    now = community(client, pipeline.read_url, LLAMA).json()
    with event_stream(client, f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community/stream") as stream:
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-store"
        assert stream.response.headers["access-control-allow-origin"] == "*"
        position, figures = stream.next_event()
        assert (position, figures) == (now["position"], now)
        for _ in range(3):
            verdict = voter.flip()
            before = ships(figures)
            previous = position
            position, figures = stream.next_event()
            assert position > previous
            assert figures["position"] == position
            assert ships(figures) == before + (1 if verdict == "ship" else -1)
    assert community(client, pipeline.read_url, LLAMA).json() == figures


def test_last_event_id_gets_the_figures_only_if_they_changed_since(pipeline: Pipeline, client: httpx.Client) -> None:
    url = f"{pipeline.read_url}/v1/comparisons/{SMOL}/community/stream"
    voter = Voter(client, pipeline, SMOL)
    before = ships(community(client, pipeline.read_url, SMOL).json())
    voter.flip()
    wait_until(lambda: ships(community(client, pipeline.read_url, SMOL).json()) == before + 1)
    current = community(client, pipeline.read_url, SMOL).json()
    with event_stream(client, url, last_event_id=str(current["position"])) as up_to_date:
        # Nothing is sent until the next change: the first event is that change, not the figures the client has.
        voter.flip()
        position, figures = up_to_date.next_event()
        assert position > current["position"]
        assert ships(figures) == ships(current) - 1  # ship -> skip
    with event_stream(client, url, last_event_id=str(current["position"])) as behind:
        assert behind.next_event() == (position, figures)  # at once: it changed since


def test_two_read_apis_both_push_a_vote_and_agree_on_the_etag(pipeline: Pipeline, client: httpx.Client) -> None:
    voter = Voter(client, pipeline, LLAMA)
    with read_api(pipeline, SHIPSKIP_SSE_KEEPALIVE_S="0.3") as second:
        urls = [pipeline.read_url, second.url]
        with (
            event_stream(client, f"{urls[0]}/v1/comparisons/{LLAMA}/community/stream") as first_stream,
            event_stream(client, f"{urls[1]}/v1/comparisons/{LLAMA}/community/stream") as second_stream,
        ):
            start = [first_stream.next_event(), second_stream.next_event()]
            assert start[0] == start[1]
            voter.flip()
            after = [first_stream.next_event(), second_stream.next_event()]
            assert after[0] == after[1]
            assert after[0][0] > start[0][0]
            assert ships(after[0][1]) == ships(start[0][1]) + 1
            # Nothing else happens: the idle stream gets keep-alive comments.
            assert second_stream.next_block() == {"comment": "keep-alive"}
        answers = [community(client, url, LLAMA) for url in urls]
        assert answers[0].content == answers[1].content
        assert answers[0].headers["etag"] == answers[1].headers["etag"]


def test_etag_304_and_cache_control(pipeline: Pipeline, client: httpx.Client) -> None:
    voter = Voter(client, pipeline, SMOL)
    first = community(client, pipeline.read_url, SMOL)
    other = community(client, pipeline.read_url, LLAMA)
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    cache_control = {part.strip() for part in first.headers["cache-control"].split(",")}
    assert {"public", "max-age=1"} <= cache_control
    assert any(part.startswith("stale-while-revalidate=") for part in cache_control)
    assert first.headers["access-control-allow-origin"] == "*"  # public figures, for any site's pages

    url = f"{pipeline.read_url}/v1/comparisons/{SMOL}/community"
    for if_none_match in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        again = client.get(url, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
    assert client.get(url, headers={"If-None-Match": '"nope"'}).status_code == 200

    position = first.json()["position"]
    voter.flip()
    wait_until(lambda: community(client, pipeline.read_url, SMOL).json()["position"] > position)
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert client.get(url, headers={"If-None-Match": changed.headers["etag"]}).status_code == 304
    # The other comparison did not change: its tag, and so every cache holding it, stays good.
    untouched = client.get(
        f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community", headers={"If-None-Match": other.headers["etag"]}
    )
    assert untouched.status_code == 304


def test_unknown_comparisons_and_full_processes_answer_json(pipeline: Pipeline, client: httpx.Client) -> None:
    missing = client.get(f"{pipeline.read_url}/v1/comparisons/nope/community/stream")
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_comparison"
    with (
        read_api(pipeline, SHIPSKIP_SSE_MAX_STREAMS="1") as small,
        event_stream(client, f"{small.url}/v1/comparisons/{LLAMA}/community/stream") as held,
    ):
        held.next_event()
        refused = client.get(f"{small.url}/v1/comparisons/{LLAMA}/community/stream")
        assert refused.status_code == 503
        assert refused.json()["error"] == "too_many_streams"
        assert int(refused.headers["retry-after"]) > 0
        assert client.get(f"{small.url}/v1/comparisons/{LLAMA}/community").status_code == 200


def test_a_restarted_read_api_loads_what_it_missed(pipeline: Pipeline, client: httpx.Client) -> None:
    voter = Voter(client, pipeline, LLAMA)
    with read_api(pipeline) as first:
        before = community(client, first.url, LLAMA).json()
    voter.flip()  # while no such process runs
    wait_until(lambda: community(client, pipeline.read_url, LLAMA).json()["position"] > before["position"])
    with read_api(pipeline) as restarted:
        expected = community(client, pipeline.read_url, LLAMA)
        loaded = community(client, restarted.url, LLAMA)
        assert loaded.content == expected.content
        assert loaded.headers["etag"] == expected.headers["etag"]
        assert ships(loaded.json()) == ships(before) + 1


def test_after_a_nats_restart_the_view_reloads_what_it_missed(
    pipeline: Pipeline, client: httpx.Client, embedded: EmbeddedServers | None
) -> None:
    if embedded is None:
        pytest.skip("needs the embedded servers, to restart NATS")
    voter = Voter(client, pipeline, SMOL)
    # No periodic resync: only the reload on reconnect can bring this process up to date.
    with read_api(pipeline, SHIPSKIP_VIEW_RESYNC_S="0", SHIPSKIP_SSE_KEEPALIVE_S="1") as frozen:
        health = client.get(f"{frozen.url}/healthz").json()
        with event_stream(client, f"{frozen.url}/v1/comparisons/{SMOL}/community/stream") as stream:
            position, figures = stream.next_event()
            # Frozen, it is still subscribed on the old connection when NATS goes away: the notice of the next
            # vote goes to the new server, where it has no subscription yet, and is lost for it.
            os.killpg(frozen.process.pid, signal.SIGSTOP)
            try:
                embedded.stop_server("nats")
                embedded.start_server("nats")
                key = random_key()
                wait_until(lambda: voter.try_flip(key), timeout=30, interval=0.5)
                wait_until(lambda: community(client, pipeline.read_url, SMOL).json()["position"] > position, 30)
            finally:
                os.killpg(frozen.process.pid, signal.SIGCONT)
            new_position, new_figures = stream.next_event()
        assert new_position > position
        assert ships(new_figures) == ships(figures) + 1
        assert community(client, frozen.url, SMOL).content == community(client, pipeline.read_url, SMOL).content
        assert client.get(f"{frozen.url}/healthz").json()["reloads"] > health["reloads"]


def test_streams_end_when_the_process_stops(pipeline: Pipeline, client: httpx.Client) -> None:
    with read_api(pipeline) as stopping:
        stream = EventStream(client, f"{stopping.url}/v1/comparisons/{LLAMA}/community/stream")
        try:
            stream.next_event()
            # SIGTERM: the process must end its streams itself (granian waits for open responses to finish).
            assert stopping.stop(timeout=10) == 0
            with pytest.raises(AssertionError, match="the stream ended"):
                stream.next_block()
        finally:
            stream.close()
