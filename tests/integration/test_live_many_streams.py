"""A thousand live streams on one read-API process: all get each change from one fan-out (no Postgres read),
and after they disconnect the process holds no more connections, streams or memory than before."""

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from infra.stack.processes import ServiceProcess, start_service
from infra.stack.servers import ServerAddresses, free_port
from tests.support import Pipeline, new_voter, running_pipeline

COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"
CLIENTS = 1000
EVENT_ID = re.compile(rb"\nid: (\d+)\n")


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("logs"), SHIPSKIP_RATE_LIMITS="off") as running:
        yield running


@pytest.fixture(scope="module")
def crowded(pipeline: Pipeline) -> Iterator[ServiceProcess]:
    """A read API that may hold more streams than granian's default limit of requests in progress (1024), with
    no periodic resync, so that any Postgres read it does shows in its /healthz."""
    env = {
        **pipeline.env,
        "GRANIAN_BACKPRESSURE": "4096",
        "SHIPSKIP_VIEW_RESYNC_S": "0",
        "SHIPSKIP_SSE_MAX_STREAMS_PER_ADDRESS": str(CLIENTS),  # every page here is on 127.0.0.1
        # granian's allocator (jemalloc) keeps freed pages until later allocations make it purge, so RSS would
        # show its cache, not what the process holds. Handing pages back at once makes RSS an honest measure.
        "_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0",
    }
    process = start_service("read", env, pipeline.log_dir, free_port())
    try:
        yield process
    finally:
        process.stop()


def worker_pid(service: ServiceProcess) -> int:
    """granian's worker: the one child of its main process (which only supervises)."""
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def open_connections(pid: int, port: int) -> int:
    """TCP connections on ``port`` that process ``pid`` holds open (from /proc: its socket fds and the TCP table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            listening = fields[3] == "0A"
            if local_port == port and not listening and fields[9] in inodes:
                count += 1
    return count


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def health(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        body: dict[str, int] = (await client.get(f"{url}/healthz")).json()
        return body


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Until ``check`` holds, for 10 s at most: less than the 15 s keep-alive, so a stream that is only found
    closed when the next keep-alive is written fails this."""
    async with asyncio.timeout(10.0):
        while not await check():
            await asyncio.sleep(0.1)


class StreamClient:
    """One page with the stream open: a bare HTTP/1.1 connection, read as raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = b""

    @classmethod
    async def connect(cls, port: int) -> "StreamClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET /v1/comparisons/{COMPARISON}/community/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        return cls(reader, writer)

    async def event_after(self, position: int) -> int:
        """Read until an event with an id past ``position`` has arrived; returns that id."""
        while True:
            ids = [int(found) for found in EVENT_ID.findall(self.received)]
            newer = [i for i in ids if i > position]
            if newer:
                return newer[0]
            chunk = await self.reader.read(65536)
            if not chunk:
                raise AssertionError("the stream ended")
            self.received += chunk

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def connect_all(port: int) -> list[StreamClient]:
    gate = asyncio.Semaphore(100)  # well below the listen backlog: no connection is refused
    clients: list[StreamClient] = []

    async def connect_one() -> None:
        async with gate:
            client = await StreamClient.connect(port)
            clients.append(client)
            await client.event_after(-1)  # the current figures, at once

    await asyncio.wait_for(asyncio.gather(*(connect_one() for _ in range(CLIENTS))), timeout=60)
    return clients


async def close_all(clients: list[StreamClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


def cast_vote(pipeline: Pipeline, verdict: str) -> None:
    with httpx.Client(timeout=10.0) as client:
        token = new_voter(client, pipeline.votes_url)
        response = client.post(
            f"{pipeline.votes_url}/v1/comparisons/{COMPARISON}/votes",
            json={"tool_id": TOOL, "verdict": verdict},
            headers={"X-Voter-Token": token},
        )
        assert response.status_code == 202, response.text


async def test_a_thousand_streams_get_each_change_and_leave_nothing_behind(
    pipeline: Pipeline, crowded: ServiceProcess
) -> None:
    port = crowded.port
    assert port is not None
    pid = worker_pid(crowded)
    start = await health(crowded.url)
    assert start["streams"] == 0

    async def all_gone() -> bool:
        # Counted before asking /healthz: the connection that asks is closed by the next look.
        return open_connections(pid, port) == 0 and (await health(crowded.url))["streams"] == 0

    await eventually(all_gone)

    # 1. A thousand pages open the stream, and a vote reaches every one of them.
    clients = await connect_all(port)
    assert (await health(crowded.url))["streams"] == CLIENTS
    assert open_connections(pid, port) >= CLIENTS
    cast_vote(pipeline, "ship")
    ids = await asyncio.wait_for(asyncio.gather(*(c.event_after(start["position"]) for c in clients)), timeout=60)
    assert len(set(ids)) == 1  # the same event, from the same fan-out
    after_vote = await health(crowded.url)
    assert after_vote["position"] == ids[0]
    assert after_vote["reloads"] == start["reloads"], "the change was read from Postgres, not from the notice"
    await close_all(clients)

    await eventually(all_gone)  # closed streams are noticed at once, not at the next keep-alive (15 s)

    # 2. Thousands more connect and go away: nothing stays behind. The first round warmed the process up.
    rss_at_start = rss_kib(pid)
    peak = 0
    for _ in range(3):
        clients = await connect_all(port)
        peak = max(peak, rss_kib(pid))
        await close_all(clients)
        await eventually(all_gone)
    rss_at_end = rss_kib(pid)
    # A thousand open streams cost megabytes (peak - start); all but noise is given back each time.
    assert rss_at_end - rss_at_start < 2048, f"RSS {rss_at_start} KiB, {peak} with streams open, {rss_at_end} after"
