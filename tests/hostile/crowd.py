"""A crowd of connections that cost the client nothing and the server a connection each, and fresh clients timed
through it.

- ``idle``: keep-alive connections, each asking ``GET /healthz`` every ``interval`` seconds and otherwise silent;
  a connection the server closes is opened again (an attacker reconnects).
- ``stalled``: vote requests whose head is complete and whose body never is (a few bytes, then nothing); one the
  server answers or closes is opened again.

A fresh client opens a new connection, sends its request and reads the answer (``Connection: close``); its time
is until the whole answer, or ``None`` when none came within the probe's timeout.

Run against a stack of one's own (``python -m tests.hostile.crowd --help``) to measure; the tests in
tests/hostile/test_crowded.py use the same pieces.
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Literal

import httpx

COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
VOTES = f"/v1/comparisons/{COMPARISON}/votes"
READ = f"/v1/comparisons/{COMPARISON}/community"

Kind = Literal["idle", "stalled"]


def raise_fd_limit(needed: int) -> None:
    """Raise this process's soft limit on open files to ``needed`` (each connection is one), within the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(f"{needed} open files needed, the hard limit is {hard} (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _vote_request(token: str, body: bytes, *, keep_alive: bool = False) -> bytes:
    return (
        f"POST {VOTES} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Voter-Token: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    ).encode() + body


def _vote_body(verdict: str) -> bytes:
    return json.dumps({"tool_id": TOOL, "verdict": verdict}).encode()


@dataclass
class Crowd:
    """``size`` connections of one kind against ``port``, kept up until ``stop``."""

    port: int
    size: int
    kind: Kind
    token: str = ""
    """A voter token (``stalled``: the requests are votes)."""
    interval: float = 5.0
    connect_timeout: float = 5.0
    held: int = 0
    """Connections open now that the server has taken (answered once, or read a stalled head from)."""
    reopened: int = 0
    """Connections the server closed (and the crowd opened again)."""
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self, ramp_s: float = 2.0) -> None:
        """Open the connections, spread over ``ramp_s``; returns once every one is open or has been tried."""
        for index in range(self.size):
            self._tasks.append(asyncio.create_task(self._one()))
            if index % 50 == 49:
                await asyncio.sleep(ramp_s * 50 / self.size)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self) -> None:
        while True:
            writer: asyncio.StreamWriter | None = None
            taken = False
            try:
                reader, opened = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), self.connect_timeout
                )
                writer = opened
                if self.kind == "idle":
                    while True:
                        opened.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        await opened.drain()
                        if not await _read_one_answer(reader):
                            break
                        if not taken:
                            taken = True
                            self.held += 1
                        await asyncio.sleep(self.interval)
                else:
                    request = _vote_request(self.token, _vote_body("ship"), keep_alive=True)
                    opened.write(request[:-5])  # the head and most of the body; the rest never comes
                    await opened.drain()
                    taken = True
                    self.held += 1
                    await reader.read(65536)  # until the server answers (a timeout) or hangs up
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                pass
            finally:
                if taken:
                    self.held -= 1
                    self.reopened += 1
                if writer is not None:
                    writer.close()
            await asyncio.sleep(0.2)


async def _read_one_answer(reader: asyncio.StreamReader) -> bool:
    """Read one HTTP answer with a Content-Length off a keep-alive connection; False if the server hung up."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    try:
        await reader.readexactly(length)
    except (asyncio.IncompleteReadError, OSError):
        return False
    return True


async def fresh_request(port: int, request: bytes, within_s: float) -> tuple[float | None, int | None]:
    """(seconds until the whole answer, its status) on a new connection; (None, None) if none came in time."""
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()  # to the end: the server closes after its answer
    except (OSError, TimeoutError):
        return None, None
    finally:
        if writer is not None:
            writer.close()
    if not answer.startswith(b"HTTP/1.1 "):
        return None, None
    return time.perf_counter() - started, int(answer.split(b" ", 2)[1])


@dataclass
class Probes:
    """The fresh clients' answers: seconds (None: no answer within the timeout) and statuses."""

    votes: list[float | None] = field(default_factory=list)
    reads: list[float | None] = field(default_factory=list)
    statuses: list[int | None] = field(default_factory=list)

    def summary(self) -> str:
        statuses = sorted(set(map(str, self.statuses)))
        return f"votes {describe(self.votes)}; reads {describe(self.reads)}; statuses {statuses}"


def percentile(times: list[float | None], fraction: float) -> float | None:
    """None (no answer) counts as the slowest."""
    ordered = sorted(times, key=lambda t: float("inf") if t is None else t)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def describe(times: list[float | None]) -> str:
    answered = [t for t in times if t is not None]

    def ms(value: float | None) -> str:
        return "no answer" if value is None else f"{value * 1000:.0f} ms"

    return f"{len(answered)}/{len(times)} answered, p50 {ms(percentile(times, 0.5))}, p99 {ms(percentile(times, 0.99))}"


async def probe(
    votes_port: int, read_port: int, tokens: list[str], *, within_s: float = 5.0, gap_s: float = 0.05
) -> Probes:
    """One fresh vote and one fresh read per token, one after another."""
    probes = Probes()
    for index, token in enumerate(tokens):
        verdict = "ship" if index % 2 else "skip"
        seconds, status = await fresh_request(votes_port, _vote_request(token, _vote_body(verdict)), within_s)
        probes.votes.append(seconds)
        probes.statuses.append(status)
        request = f"GET {READ} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        seconds, status = await fresh_request(read_port, request, within_s)
        probes.reads.append(seconds)
        probes.statuses.append(status)
        await asyncio.sleep(gap_s)
    return probes


def new_tokens(votes_url: str, count: int) -> list[str]:
    with httpx.Client(timeout=10.0) as client:
        tokens = []
        for _ in range(count):
            response = client.post(votes_url + "/v1/voters")
            response.raise_for_status()
            tokens.append(response.json()["voter_token"])
        return tokens


CrowdSpec = tuple[int, int, Kind, str]
"""(port, size, kind, voter token)"""


def _hold(crowds: list[CrowdSpec], interval_s: float, held: "Synchronized[int]") -> None:
    """A child process's whole life: keep the crowds up, telling how many connections they hold, until killed."""
    raise_fd_limit(sum(size for _, size, _, _ in crowds) + 256)

    async def hold() -> None:
        running = [Crowd(port, size, kind, token=token, interval=interval_s) for port, size, kind, token in crowds]

        async def tell() -> None:
            while True:
                held.value = sum(crowd.held for crowd in running)
                await asyncio.sleep(0.1)

        telling = asyncio.create_task(tell())
        for crowd in running:
            await crowd.start()
        await telling

    asyncio.run(hold())


@contextlib.contextmanager
def crowd_process(
    crowds: list[CrowdSpec], *, interval_s: float = 5.0, settle_s: float = 20.0
) -> Iterator["Synchronized[int]"]:
    """The crowds kept up by a process of their own, so that the time a fresh client measures is the server's, not
    the crowd's own event loop's; yields the count of connections held once it stopped growing (after at most
    ``settle_s``)."""
    context = multiprocessing.get_context("spawn")
    held = context.Value("i", 0)
    process = context.Process(target=_hold, args=(crowds, interval_s, held), daemon=True)
    process.start()
    try:
        target, deadline, last = sum(size for _, size, _, _ in crowds), time.monotonic() + settle_s, 0
        while held.value < target and time.monotonic() < deadline:
            time.sleep(2.0)
            if 0 < held.value <= last:
                break  # no longer growing: the servers take no more
            last = held.value
        yield held
    finally:
        process.kill()
        process.join()


def crowded_probes(votes_port: int, read_port: int, tokens: list[str], kind: Kind, size: int) -> tuple[Probes, int]:
    """Probes while ``size`` ``kind`` connections are open against each API (``stalled``: the votes API only); and
    how many connections the APIs held then."""
    crowds: list[CrowdSpec] = [(votes_port, size, kind, tokens[0])]
    if kind == "idle":
        crowds.append((read_port, size, kind, ""))
    with crowd_process(crowds) as held:
        probes = asyncio.run(probe(votes_port, read_port, tokens[1:]))
        return probes, held.value


@contextlib.contextmanager
def own_stack(extra_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Servers and the three services of one's own on free ports: (votes URL, read URL)."""
    from infra.stack.servers import EmbeddedServers
    from tests.support import running_pipeline

    data_dir = Path(tempfile.mkdtemp(prefix="shipskip-crowd-"))
    try:
        with (
            EmbeddedServers(data_dir) as servers,
            running_pipeline(servers.addresses, data_dir / "logs", **extra_env) as pipe,
        ):
            yield pipe.votes_url, pipe.read_url
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["idle", "stalled"], default="idle")
    parser.add_argument("--connections", type=int, default=2000, help="per API")
    parser.add_argument("--probes", type=int, default=100, help="fresh votes (and as many reads)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the services")
    args = parser.parse_args()
    raise_fd_limit(256 + 2 * args.probes)
    extra_env = dict(item.split("=", 1) for item in args.env)
    with own_stack(extra_env) as (votes_url, read_url):
        votes_port, read_port = (int(url.rsplit(":", 1)[1]) for url in (votes_url, read_url))
        tokens = new_tokens(votes_url, args.probes + 1)
        baseline = asyncio.run(probe(votes_port, read_port, tokens[1:11]))
        print(f"no crowd: {baseline.summary()}")
        probes, held = crowded_probes(votes_port, read_port, tokens, args.kind, args.connections)
        print(f"{args.connections} {args.kind} connections per API ({held} held): {probes.summary()}")


if __name__ == "__main__":
    main()
