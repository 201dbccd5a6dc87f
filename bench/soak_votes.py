"""The soak's voters: ``python -m bench.soak_votes '<VoteSoakSpec as JSON>'`` prints one VoteSoakResult as JSON.

A paced open loop (``rate`` votes/s over ``connections`` keep-alive connections, on ``bench.httpclient``) of
voters casting, changing, retracting and repeating votes on the soak's comparisons. Each voter has one request
in flight at most and every vote carries an Idempotency-Key; a vote without a definite answer (a timeout, a lost
connection, a 503, 504 or 429) is sent again with the same key until it gets one, as a well-behaved widget does. So
the generator knows every ballot it left, and the tallies that must result (``expected``) are exact; the event id
of every 202 goes to ``accepted_file``, one a line.
"""

import asyncio
import random
import sys
import time
from array import array
from collections import Counter
from pathlib import Path

import msgspec

from bench.httpclient import HttpConnection, HttpError, build_request
from bench.pyload import percentile
from contracts.http import VoteAccepted

RETRY_STATUSES = (429, 503, 504)
GIVE_UP_S = 100.0
"""Past the stream's duplicate window (120 s) a retry would be stored as a new vote: stop before it."""


class SoakComparison(msgspec.Struct, frozen=True):
    id: str
    tools: tuple[str, str]


class VoteSoakSpec(msgspec.Struct, frozen=True):
    port: int
    rate: float
    connections: int
    duration_s: float
    tokens_file: str
    comparisons: list[SoakComparison]
    accepted_file: str
    bucket_s: float
    """Width of the time buckets the per-minute counts are kept in (answers after the last go into it)."""
    timeout_s: float = 5.0
    seed: int = 8


class Bucket(msgspec.Struct):
    accepted: int = 0
    unchanged: int = 0
    errors: int = 0
    """Answers other than 200/202, timeouts and broken connections (each retry counts)."""


class VoteSoakResult(msgspec.Struct):
    duration_s: float
    votes: int
    """Votes that got a definite answer."""
    accepted: int
    """202s: distinct event ids."""
    unchanged: int
    refused: int
    """Definite refusals (4xx other than 429, 5xx other than 503 and 504): the ballot stays as it was."""
    statuses: dict[str, int]
    """Every HTTP answer, retried ones included."""
    timeouts: int
    connection_errors: int
    retries: int
    unknown: int
    """Votes given up without a definite answer: their ballots are not known, so the check cannot be exact."""
    duplicate_event_ids: int
    actions: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    late_p99_ms: float
    """How late sends left against the pace (a generator that cannot keep up falls behind here)."""
    late_max_ms: float
    buckets: list[Bucket]
    expected: dict[str, dict[str, tuple[int, int]]]
    """comparison -> tool -> (ship, skip): the tallies the ballots this generator left must give."""


def bucket_count(duration_s: float, bucket_s: float) -> int:
    return max(1, round(duration_s / bucket_s))


BallotKey = tuple[int, int, int]
"""(comparison index, tool index, voter index)"""


class Voters:
    """The voters' ballots as their answers left them, and what each does next."""

    def __init__(self, spec: VoteSoakSpec) -> None:
        self.spec = spec
        self.tokens = [t for t in Path(spec.tokens_file).read_text().splitlines() if t]
        self.ballots: dict[BallotKey, str] = {}
        self.unknown: set[BallotKey] = set()
        self.busy: set[int] = set()
        self.rng = random.Random(spec.seed)
        self.actions: Counter[str] = Counter()
        self.serial = 0

    def next_vote(self) -> tuple[BallotKey, str | None, bytes]:
        """Pick an idle voter and what they do; (ballot, verdict or None to retract, the raw request)."""
        rng = self.rng
        while True:
            voter = rng.randrange(len(self.tokens))
            if voter not in self.busy:
                break
        self.busy.add(voter)
        c = rng.randrange(len(self.spec.comparisons))
        t = rng.randrange(2)
        key = (c, t, voter)
        current = self.ballots.get(key)
        verdict: str | None
        if current is None:
            action, verdict = "cast", ("ship" if rng.random() < 0.55 else "skip")
        else:
            r = rng.random()
            if r < 0.55:
                action, verdict = "change", ("skip" if current == "ship" else "ship")
            elif r < 0.85:
                action, verdict = "retract", None
            else:
                action, verdict = "repeat", current  # a second click: answered 200 "unchanged"
        self.actions[action] += 1
        self.serial += 1
        comparison = self.spec.comparisons[c]
        tool = comparison.tools[t]
        headers = {
            "X-Voter-Token": self.tokens[voter],
            "Idempotency-Key": f"soak-{self.spec.seed}-{self.serial}",
        }
        path = f"/v1/comparisons/{comparison.id}/votes"
        if verdict is None:
            raw = build_request("DELETE", f"{path}/{tool}", self.spec.port, headers)
        else:
            headers["Content-Type"] = "application/json"
            body = f'{{"tool_id":"{tool}","verdict":"{verdict}"}}'.encode()
            raw = build_request("POST", path, self.spec.port, headers, body)
        return key, verdict, raw

    def answered(self, key: BallotKey, verdict: str | None) -> None:
        if verdict is None:
            self.ballots.pop(key, None)
        else:
            self.ballots[key] = verdict

    def expected(self) -> dict[str, dict[str, tuple[int, int]]]:
        counts = {c.id: {tool: [0, 0] for tool in c.tools} for c in self.spec.comparisons}
        for (c, t, _), verdict in self.ballots.items():
            comparison = self.spec.comparisons[c]
            counts[comparison.id][comparison.tools[t]][0 if verdict == "ship" else 1] += 1
        return {c: {tool: (ship, skip) for tool, (ship, skip) in tools.items()} for c, tools in counts.items()}


_accepted = msgspec.json.Decoder(VoteAccepted)


async def run(spec: VoteSoakSpec) -> VoteSoakResult:
    voters = Voters(spec)
    statuses: Counter[str] = Counter()
    latencies, lateness = array("d"), array("d")
    accepted: list[str] = []
    seen_ids: set[str] = set()
    counts = Counter[str]()
    buckets = [Bucket() for _ in range(bucket_count(spec.duration_s, spec.bucket_s))]
    connections = [await HttpConnection.open(spec.port) for _ in range(spec.connections)]
    started = time.perf_counter()
    deadline = started + spec.duration_s
    period = spec.connections / spec.rate

    def bucket() -> Bucket:
        return buckets[min(len(buckets) - 1, int((time.perf_counter() - started) / spec.bucket_s))]

    async def reconnect(slot: int) -> HttpConnection:
        connections[slot].close()
        while True:
            try:
                connections[slot] = await HttpConnection.open(spec.port)
                return connections[slot]
            except OSError:
                counts["connection_errors"] += 1
                bucket().errors += 1
                await asyncio.sleep(0.5)

    async def vote(slot: int) -> None:
        key, verdict, raw = voters.next_vote()
        first = time.perf_counter()
        try:
            while True:
                if time.perf_counter() - first > GIVE_UP_S:
                    voters.unknown.add(key)
                    counts["unknown"] += 1
                    return
                sent = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(connections[slot].request(raw), spec.timeout_s)
                except TimeoutError:
                    counts["timeouts"] += 1
                    counts["retries"] += 1
                    bucket().errors += 1
                    await reconnect(slot)
                    continue
                except (HttpError, OSError):
                    counts["connection_errors"] += 1
                    counts["retries"] += 1
                    bucket().errors += 1
                    await reconnect(slot)
                    await asyncio.sleep(0.1)
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[str(status)] += 1
                if status in RETRY_STATUSES:
                    counts["retries"] += 1
                    bucket().errors += 1
                    await asyncio.sleep(0.1)
                    continue
                break
            counts["votes"] += 1
            if status == 202:
                event_id = _accepted.decode(body).event_id or ""
                if event_id in seen_ids:
                    counts["duplicate_event_ids"] += 1
                seen_ids.add(event_id)
                accepted.append(event_id)
                voters.answered(key, verdict)
                bucket().accepted += 1
            elif status == 200:
                voters.answered(key, verdict)  # unchanged: the ballot already held this verdict
                counts["unchanged"] += 1
                bucket().unchanged += 1
            else:
                counts["refused"] += 1  # a definite refusal writes nothing: the ballot stays as it was
                bucket().errors += 1
        finally:
            voters.busy.discard(key[2])

    async def worker(slot: int) -> None:
        due = started + slot * period / spec.connections
        while True:
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.perf_counter()
            if now >= deadline:
                return
            lateness.append(max(0.0, now - due))
            due += period
            await vote(slot)

    await asyncio.gather(*(worker(slot) for slot in range(spec.connections)))
    duration = time.perf_counter() - started
    for connection in connections:
        connection.close()
    Path(spec.accepted_file).write_text("".join(event_id + "\n" for event_id in accepted))
    ordered, late = sorted(latencies), sorted(lateness)
    return VoteSoakResult(
        duration_s=duration,
        votes=counts["votes"],
        accepted=len(seen_ids),
        unchanged=counts["unchanged"],
        refused=counts["refused"],
        statuses=dict(statuses),
        timeouts=counts["timeouts"],
        connection_errors=counts["connection_errors"],
        retries=counts["retries"],
        unknown=counts["unknown"],
        duplicate_event_ids=counts["duplicate_event_ids"],
        actions=dict(voters.actions),
        p50_ms=percentile(ordered, 50) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] if ordered else 0.0) * 1000,
        late_p99_ms=percentile(late, 99) * 1000,
        late_max_ms=(late[-1] if late else 0.0) * 1000,
        buckets=buckets,
        expected=voters.expected(),
    )


def main(argv: list[str]) -> int:
    spec = msgspec.json.decode(argv[0], type=VoteSoakSpec)
    result = asyncio.run(run(spec))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
