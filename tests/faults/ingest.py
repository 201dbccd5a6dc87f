"""Sustained voting for the fault tests, as well-behaved widgets do it, and the exact check that ends each test.

Each worker thread owns its voters and votes for them one request at a time (so every ballot's order is the
order of its requests), with an Idempotency-Key per vote. An answer that says "try again" (503, 504, 429), or a
connection that failed without an answer, is retried with the same key until the service gives a definite
answer: so every vote's outcome is known, and the model of what the tallies must be is exact.
"""

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import asyncpg
import httpx

from contracts.events import VoteCast, VoteRetracted
from contracts.subjects import VOTES_STREAM
from infra.stack.servers import ServerAddresses
from tests.support import (
    DEMO_TOOLS,
    Pipeline,
    connect_nats,
    projected_position,
    random_key,
    run_cli,
    stream_events,
    wait_until,
)

TOOLS = DEMO_TOOLS
LOAD_ENV = {
    "SHIPSKIP_RATE_LIMITS": "off",
    # Every test vote comes from 127.0.0.1: without this the counting policy would keep most ballots uncounted.
    "SHIPSKIP_BALLOTS_PER_CLIENT_DAY": "1000000",
    # Small batches: many transactions, so a crash or an outage is likely to fall inside one.
    "SHIPSKIP_BATCH_SIZE": "50",
}
RETRY_STATUSES = {429, 503, 504}

Tallies = dict[tuple[str, str], tuple[int, int]]
BallotKey = tuple[str, str, str]


@dataclass
class Outcomes:
    """What the clients were told, all workers together."""

    accepted: list[str] = field(default_factory=list)
    """event_id of every 202."""
    unchanged: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    """Every answer seen, retries included (0: no answer, the connection failed)."""
    retry_after_missing: int = 0
    """503/504/429 answers without a Retry-After header."""


class Ingest:
    """Votes from ``workers`` threads until ``stop()``; ``model`` holds every ballot as the clients left it."""

    def __init__(
        self,
        votes_url: Callable[[], str],
        *,
        workers: int = 4,
        voters_per_worker: int = 20,
        seed: int = 8,
        pause_s: float = 0.0,
        tools: Mapping[str, tuple[str, str]] = TOOLS,
    ) -> None:
        self._votes_url = votes_url
        self._tools = tools
        """The comparisons voted on, and their tools."""
        self._workers = workers
        self._voters_per_worker = voters_per_worker
        self._seed = seed
        self._pause_s = pause_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self.model: dict[BallotKey, str | None] = {}
        self.outcomes = Outcomes()
        self.sent = 0

    def start(self) -> "Ingest":
        with httpx.Client(timeout=10) as client:
            tokens = [self._issue(client) for _ in range(self._workers * self._voters_per_worker)]
        for index in range(self._workers):
            mine = tokens[index * self._voters_per_worker : (index + 1) * self._voters_per_worker]
            thread = threading.Thread(target=self._run, args=(index, mine), name=f"ingest-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _issue(self, client: httpx.Client) -> str:
        response = client.post(self._votes_url() + "/v1/voters")
        assert response.status_code == 201, response.text
        token: str = response.json()["voter_token"]
        return token

    def wait_for_votes(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` more votes have had their definite answer."""
        target = self.sent + count
        wait_until(lambda: self.sent >= target or bool(self._errors), timeout=timeout)
        self._raise()

    def stop(self, timeout: float = 90.0) -> None:
        """Stop sending new votes; the votes in hand are retried until answered."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a vote never got a definite answer"
        self._raise()

    def _raise(self) -> None:
        if self._errors:
            raise AssertionError(f"ingest failed: {self._errors[0]!r}") from self._errors[0]

    def _run(self, index: int, tokens: list[str]) -> None:
        rng = random.Random(self._seed * 1000 + index)
        try:
            with httpx.Client(timeout=httpx.Timeout(15.0, connect=5.0)) as client:
                while not self._stop.is_set():
                    token = rng.choice(tokens)
                    comparison = rng.choice(list(self._tools))
                    tool = rng.choice(self._tools[comparison])
                    verdict = None if rng.random() < 0.15 else rng.choice(["ship", "skip"])
                    self._vote(client, token, comparison, tool, verdict)
                    if self._pause_s:
                        time.sleep(self._pause_s)
        except BaseException as exc:
            self._errors.append(exc)

    def _vote(self, client: httpx.Client, token: str, comparison: str, tool: str, verdict: str | None) -> None:
        headers = {"X-Voter-Token": token, "Idempotency-Key": random_key()}
        deadline = time.monotonic() + 120.0  # the duplicate window: past it a retry would be a new vote
        while True:
            assert time.monotonic() < deadline, "no definite answer within the duplicate window"
            url = f"{self._votes_url()}/v1/comparisons/{comparison}/votes"
            try:
                if verdict is None:
                    response = client.delete(f"{url}/{tool}", headers=headers)
                else:
                    response = client.post(url, json={"tool_id": tool, "verdict": verdict}, headers=headers)
            except httpx.TransportError:
                self._count(0)
                time.sleep(0.1)
                continue
            self._count(response.status_code)
            if response.status_code in RETRY_STATUSES:
                if "retry-after" not in response.headers:
                    with self._lock:
                        self.outcomes.retry_after_missing += 1
                time.sleep(0.1)
                continue
            break
        body = response.json()
        with self._lock:
            if response.status_code == 202:
                assert body["status"] == "accepted", body
                self.outcomes.accepted.append(body["event_id"])
            else:
                assert response.status_code == 200, (response.status_code, body)
                assert body["status"] == "unchanged", body
                self.outcomes.unchanged += 1
            self.model[(comparison, tool, token)] = verdict
            self.sent += 1

    def record(self, comparison: str, tool: str, token: str, verdict: str | None, event_id: str | None) -> None:
        """A vote sent by the test itself (one voter of its own), so that the final check counts it too."""
        with self._lock:
            if event_id is not None:
                self.outcomes.accepted.append(event_id)
            self.model[(comparison, tool, token)] = verdict

    def _count(self, status: int) -> None:
        with self._lock:
            self.outcomes.statuses[status] += 1
            if status != 202 and status != 200:
                self.outcomes.retries += 1

    def expected_tallies(self) -> Tallies:
        counts = {(c, t): [0, 0] for c, tools in self._tools.items() for t in tools}
        for (comparison, tool, _), verdict in self.model.items():
            if verdict is not None:
                counts[(comparison, tool)][0 if verdict == "ship" else 1] += 1
        return {key: (ship, skip) for key, (ship, skip) in counts.items()}


async def stream_last_seq(servers: ServerAddresses) -> int:
    nc = await connect_nats(servers)
    try:
        return int((await nc.jetstream().stream_info(VOTES_STREAM)).state.last_seq or 0)
    finally:
        await nc.close()


async def stream_event_ids(servers: ServerAddresses) -> list[str]:
    """The event id of every vote event in VOTES, in order."""
    events = await stream_events(servers)
    return [event.event_id for event in events if isinstance(event, VoteCast | VoteRetracted)]


async def database_tallies(servers: ServerAddresses) -> tuple[Tallies, int]:
    """(ship, skip) per tool as Postgres holds them, and how many ballots are kept uncounted."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        rows = await conn.fetch(
            "select comparison_id, tool_id, ship, skip, uncounted_ship, uncounted_skip from tallies"
        )
    finally:
        await conn.close()
    tallies = {(c, t): (0, 0) for c, tools in TOOLS.items() for t in tools}
    tallies.update({(r[0], r[1]): (r[2], r[3]) for r in rows})
    return tallies, sum(r[4] + r[5] for r in rows)


def served_tallies(read_url: str, tools: Mapping[str, tuple[str, str]] = TOOLS) -> Tallies:
    query = "&".join(f"comparison_id={c}" for c in tools)
    response = httpx.get(f"{read_url}/v1/community?{query}", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (c["comparison_id"], t["tool_id"]): (t["ship"], t["skip"])
        for c in response.json()["comparisons"]
        for t in c["tools"]
    }


def assert_exact(pipeline: Pipeline, servers: ServerAddresses, ingest: Ingest, *, same_event_ids: bool = True) -> None:
    """Every 202 is in the stream exactly once, and the tallies (Postgres, the read API, and a replay of the
    stream by ``shipskip verify``) equal the ballots the clients left: no vote lost, none counted twice."""
    ids = asyncio.run(stream_event_ids(servers))
    accepted = ingest.outcomes.accepted
    assert len(ids) == len(accepted), f"{len(ids)} events in the stream for {len(accepted)} votes answered 202"
    if same_event_ids:
        assert Counter(ids) == Counter(accepted), "the stream's events are not the ones answered 202"
    last = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == last, timeout=60)
    expected = ingest.expected_tallies()
    tallies, uncounted = asyncio.run(database_tallies(servers))
    assert tallies == expected
    assert uncounted == 0
    wait_until(lambda: served_tallies(pipeline.read_url) == expected, timeout=30)
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 0, verified.stderr
    assert f"verified up to stream position {last}: 0 differences" in verified.stdout, verified.stdout
