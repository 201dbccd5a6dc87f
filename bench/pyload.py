"""The Python load generator: ``python -m bench.pyload '<LoadSpec as JSON>'`` prints one LoadResult as JSON.

A closed loop on ``connections`` keep-alive connections, or, with ``rate``, each connection paced so that all
together send ``rate`` requests per second. Votes follow the same ring as bench/lua/bench.lua. Bounded by
``duration_s`` and ``max_requests``.
"""

import asyncio
import sys
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import msgspec

from bench.httpclient import HttpConnection, HttpError, build_request
from bench.load import LoadResult, LoadSpec


class _Requests:
    """The raw request for each index: a fixed GET, or vote ``cursor + index`` of the ring."""

    def __init__(self, spec: LoadSpec) -> None:
        self._spec = spec
        self._gets = [build_request("GET", path, spec.port) for path in spec.paths or (spec.path,)]
        self._tokens: list[str] = []
        if spec.vote is not None:
            self._tokens = [t for t in Path(spec.vote.tokens_file).read_text().splitlines() if t]

    def __call__(self, index: int) -> bytes:
        vote = self._spec.vote
        if vote is None:
            return self._gets[index % len(self._gets)]
        i = vote.cursor + index
        n = len(self._tokens)
        ring_pass = i // n
        tool = vote.tools[ring_pass % 2]
        verdict = "ship" if (ring_pass // 2) % 2 == 0 else "skip"
        body = f'{{"tool_id":"{tool}","verdict":"{verdict}"}}'.encode()
        headers = {"X-Voter-Token": self._tokens[i % n], "Content-Type": "application/json"}
        return build_request("POST", vote.path, self._spec.port, headers, body)


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run(spec: LoadSpec) -> LoadResult:
    make = _Requests(spec)
    latencies = array("d")
    statuses: Counter[str] = Counter()
    errors = 0
    timeouts = 0
    issued = 0
    limit = spec.max_requests or 2**62
    connections = [await HttpConnection.open(spec.port) for _ in range(spec.connections)]
    started = time.perf_counter()
    deadline = started + spec.duration_s
    period = spec.connections / spec.rate if spec.rate else 0.0

    async def worker(slot: int, connection: HttpConnection) -> None:
        nonlocal issued, errors, timeouts
        due = started + (slot / spec.rate if spec.rate else 0.0)
        while issued < limit:
            if period:
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                due += period
            now = time.perf_counter()
            if now >= deadline:
                return
            index = issued
            issued += 1
            try:
                status, _ = await asyncio.wait_for(connection.request(make(index)), spec.timeout_s)
            except (HttpError, TimeoutError, OSError) as exc:
                errors += 1
                timeouts += isinstance(exc, TimeoutError)
                connection.close()
                connection = connections[slot] = await HttpConnection.open(spec.port)
                continue
            latencies.append(time.perf_counter() - now)
            statuses[str(status)] += 1

    await asyncio.gather(*(worker(slot, conn) for slot, conn in enumerate(connections)))
    duration = time.perf_counter() - started
    for connection in connections:
        connection.close()
    ordered = array("d", sorted(latencies))
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return LoadResult(
        generator="python",
        requests=len(ordered),
        duration_s=duration,
        statuses=dict(statuses),
        socket_errors=errors,
        mean_ms=mean * 1000,
        p50_ms=percentile(ordered, 50) * 1000,
        p90_ms=percentile(ordered, 90) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] if ordered else 0.0) * 1000,
        timeouts=timeouts,
    )


def main(argv: list[str]) -> int:
    spec = msgspec.json.decode(argv[0], type=LoadSpec)
    result = asyncio.run(run(spec))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
