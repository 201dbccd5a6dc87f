"""CPU per vote of the votes app itself, without an HTTP server (not part of ``make bench``).

    .venv/bin/python -m bench.votes_cpu [VOTES] [ROUNDS]

Starts embedded servers in a temporary folder, builds the votes app (``services.votes.app.create_app``, rate limits
off, on uvloop as granian runs it), runs its lifespan, issues 2,000 voter tokens through it, then casts VOTES votes
(default 32,000) from 32 concurrent tasks straight into the ASGI app, ROUNDS times (default 3), every vote a change
of mind as in the ingest benchmark. Each round prints the process's CPU time per vote and the votes a second.

What it leaves out, granian and the HTTP bytes, the bare baseline pays as well; what it keeps is everything the
service adds: Litestar's routing, the route, Redis, the JetStream publish and its ack. Without the noise of a
server, a load generator and a projector sharing two cores, the figure moves by about 1 % from run to run:
fine enough for A/B comparisons of the vote path (run it in two checkouts, alternately).
"""

import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from bench.one_path import cpu_s, run_on_embedded_servers
from bench.stack import service_env
from infra.stack.bootstrap import bootstrap
from infra.stack.servers import ServerAddresses
from services.shared.metrics_folder import MULTIPROCESS_VARIABLE

_CONCURRENCY = 32
_VOTERS = 2000
_COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
_TOOLS = ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1")
_HOST = [(b"host", b"127.0.0.1:8081")]

App = Any  # an ASGI app


async def _call(app: App, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> Any:
    """One request into the ASGI app: (status, body)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8081),
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0
    reply = b""

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # nothing more: as a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, reply
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            reply += message.get("body", b"")

    await app(scope, receive, send)
    return status, reply


def _vote(index: int, tokens: list[bytes]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    rounds = index // len(tokens)
    body = b'{"tool_id":"%s","verdict":"%s"}' % (_TOOLS[rounds % 2].encode(), (b"ship", b"skip")[(rounds // 2) % 2])
    headers = [
        *_HOST,
        (b"x-voter-token", tokens[index % len(tokens)]),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]
    return headers, body


async def _measure(servers: ServerAddresses, votes: int, rounds: int) -> None:
    await bootstrap(servers.nats, servers.database_url)
    os.environ.update(service_env(servers))  # the benchmark stack's environment (bench/stack.py)
    from services.votes.app import create_app  # after the environment it reads

    app: App = create_app()
    lifespan_events: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await lifespan_events.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            started.set()

    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_events.get, lifespan_send)
    )
    await started.wait()
    tokens = []
    for _ in range(_VOTERS):
        _, reply = await _call(app, "POST", "/v1/voters", _HOST)
        tokens.append(json.loads(reply)["voter_token"].encode())
    path = f"/v1/comparisons/{_COMPARISON}/votes"
    next_vote = 0
    statuses: Counter[int] = Counter()

    async def cast(count: int) -> None:
        nonlocal next_vote
        for _ in range(count):
            headers, body = _vote(next_vote, tokens)
            next_vote += 1
            status, _ = await _call(app, "POST", path, headers, body)
            statuses[status] += 1

    await asyncio.gather(*(cast(200) for _ in range(_CONCURRENCY)))  # warm-up
    for _ in range(rounds):
        statuses.clear()
        cpu, wall = cpu_s(), time.perf_counter()
        await asyncio.gather(*(cast(votes // _CONCURRENCY) for _ in range(_CONCURRENCY)))
        cpu, wall = cpu_s() - cpu, time.perf_counter() - wall
        done = sum(statuses.values())
        print(
            f"{1e6 * cpu / done:6.1f} µs of CPU a vote, {done / wall:7,.0f} votes/s, answers {dict(statuses)}",
            flush=True,
        )
    await lifespan_events.put({"type": "lifespan.shutdown"})
    await lifespan


def main() -> None:
    if MULTIPROCESS_VARIABLE not in os.environ:
        # prometheus-client took its storage from the environment when first imported (by the imports above), as in
        # a granian worker: start again with a metrics folder of this run's set, as `shipskip serve` does.
        folder = tempfile.mkdtemp(prefix="shipskip-votes-cpu-metrics-")
        command = [sys.executable, "-m", "bench.votes_cpu", *sys.argv[1:]]
        os.execve(command[0], command, {**os.environ, MULTIPROCESS_VARIABLE: folder})  # noqa: S606 - no shell
    run_on_embedded_servers("votes-cpu", _measure, 32_000)


if __name__ == "__main__":
    main()
