"""The soak's live pages: ``python -m bench.soak_sse '<SseSoakSpec as JSON>'`` holds ``clients`` SSE streams open.

A process of its own, so that hundreds of streams in Python do not take the event loop of the vote generator.
Each client reads ``/v1/comparisons/{id}/community/stream`` with ``bench.httpclient.sse_stream`` and, like a
browser's EventSource, reconnects a second after its stream ends or breaks (each one counted by kind).

It talks with the soak on stdin and stdout, one JSON object a line:
- out ``{"ready": n}`` once every client has its first event (or after ``connect_timeout_s``);
- in ``{"start": true}``: the load begins; from now on the gaps between events and the clients that got events
  in each time bucket are counted;
- in ``{"drain": true}``: the load is over;
- in ``{"final": {comparison_id: position}}``: wait until every client's last figures are at least at that
  position (or ``final_timeout_s``), then print the SseSoakResult and exit.
"""

import asyncio
import contextlib
import sys
import time
from collections import Counter

import msgspec

from bench.httpclient import HttpError, sse_stream
from contracts.http import ComparisonCommunity


class SseSoakSpec(msgspec.Struct, frozen=True):
    port: int
    clients: int
    comparison_ids: list[str]
    bucket_s: float
    buckets: int
    """Events after the last bucket (the load's tail) count in it."""
    connect_timeout_s: float = 120.0
    final_timeout_s: float = 60.0
    reconnect_s: float = 1.0
    connecting_at_once: int = 50
    """Connections opened at the same time while the clients start (a burst of 500 SYNs overflows backlogs)."""


class LastFigures(msgspec.Struct, frozen=True):
    """How many clients ended on these figures."""

    comparison_id: str
    position: int
    tools: dict[str, tuple[int, int]]
    clients: int


class SseSoakResult(msgspec.Struct):
    clients: int
    connected_at_start: int
    """Clients that had their first event before the load began."""
    connects: int
    """Successful connections (the first of each client included)."""
    reconnects: int
    drops: dict[str, int]
    """Streams that ended or broke after they had answered, by kind."""
    connect_errors: dict[str, int]
    """Attempts that got no stream, by kind (an HTTP status, a refused connection, a timeout)."""
    events: int
    events_per_client_min: int
    events_per_client_max: int
    clients_with_events: list[int]
    """Per time bucket of the load: clients that received at least one event in it."""
    longest_silence_s: float
    """The longest time any client went without an event while the votes went on."""
    silent_clients: int
    """Clients with no event at all during the load."""
    behind_at_end: int
    """Clients whose last figures were older than the final ones when the wait for them ran out."""
    last_figures: list[LastFigures]


_figures = msgspec.json.Decoder(ComparisonCommunity)


class Clients:
    def __init__(self, spec: SseSoakSpec) -> None:
        self.spec = spec
        n = spec.clients
        self.comparison = [spec.comparison_ids[i % len(spec.comparison_ids)] for i in range(n)]
        self.events = [0] * n
        self.last_data: list[bytes | None] = [None] * n
        self.last_at = [0.0] * n
        self.seen_bucket = [-1] * n
        self.first_event = [asyncio.Event() for _ in range(n)]
        self.clients_with_events: list[int] = []
        self.longest_silence = 0.0
        self.measuring = False
        self.started = 0.0
        self.connects = 0
        self.reconnects = 0
        self.drops: Counter[str] = Counter()
        self.connect_errors: Counter[str] = Counter()
        self.connecting = asyncio.Semaphore(spec.connecting_at_once)

    def start_measuring(self) -> None:
        self.started = now = time.perf_counter()
        self.measuring = True
        self.last_at = [now] * len(self.last_at)

    def stop_measuring(self) -> None:
        now = time.perf_counter()
        self.measuring = False
        self.longest_silence = max([self.longest_silence, *(now - at for at in self.last_at)])

    def received(self, client: int, data: bytes) -> None:
        now = time.perf_counter()
        self.events[client] += 1
        self.last_data[client] = data
        if self.measuring:
            self.longest_silence = max(self.longest_silence, now - self.last_at[client])
            bucket = min(self.spec.buckets - 1, int((now - self.started) / self.spec.bucket_s))
            if self.seen_bucket[client] != bucket:
                self.seen_bucket[client] = bucket
                while len(self.clients_with_events) <= bucket:
                    self.clients_with_events.append(0)
                self.clients_with_events[bucket] += 1
        self.last_at[client] = now
        self.first_event[client].set()

    async def run(self, client: int) -> None:
        path = f"/v1/comparisons/{self.comparison[client]}/community/stream"
        first = True
        while True:
            if not first:
                self.reconnects += 1
                await asyncio.sleep(self.spec.reconnect_s)
            first = False
            answered = False
            try:
                async with self.connecting:
                    stream = sse_stream(self.spec.port, path, timeout_s=10.0)
                    data = await anext(stream)
                answered = True
                self.connects += 1
                async with contextlib.aclosing(stream):
                    self.received(client, data)
                    async for data in stream:
                        self.received(client, data)
                self.drops["ended by the server"] += 1
            except HttpError as exc:
                kind = str(exc)[:60] if not answered else "broken"
                (self.drops if answered else self.connect_errors)[kind] += 1
            except StopAsyncIteration:
                self.connect_errors["ended before the first event"] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                (self.drops if answered else self.connect_errors)[type(exc).__name__] += 1

    def position(self, client: int) -> int:
        data = self.last_data[client]
        return _figures.decode(data).position if data is not None else -1

    def last_figures(self) -> list[LastFigures]:
        ends: Counter[tuple[str, int, tuple[tuple[str, int, int], ...]]] = Counter()
        for client, data in enumerate(self.last_data):
            if data is None:
                ends[(self.comparison[client], -1, ())] += 1
                continue
            figures = _figures.decode(data)
            tools = tuple((t.tool_id, t.ship, t.skip) for t in figures.tools)
            ends[(figures.comparison_id, figures.position, tools)] += 1
        return [
            LastFigures(comparison_id, position, {tool: (ship, skip) for tool, ship, skip in tools}, count)
            for (comparison_id, position, tools), count in sorted(ends.items())
        ]


def say(message: object) -> None:
    sys.stdout.write(msgspec.json.encode(message).decode() + "\n")
    sys.stdout.flush()


class _Command(msgspec.Struct, omit_defaults=True):
    start: bool = False
    drain: bool = False
    final: dict[str, int] | None = None


async def _commands() -> _Command:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise EOFError("the soak closed our stdin")
    return msgspec.json.decode(line, type=_Command)


async def run(spec: SseSoakSpec) -> SseSoakResult:
    clients = Clients(spec)
    tasks = [asyncio.create_task(clients.run(i)) for i in range(spec.clients)]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(spec.connect_timeout_s):
            await asyncio.gather(*(event.wait() for event in clients.first_event))
    connected_at_start = sum(event.is_set() for event in clients.first_event)
    say({"ready": connected_at_start})
    final: dict[str, int] = {}
    while True:
        command = await _commands()
        if command.start:
            clients.start_measuring()
        if command.drain:
            clients.stop_measuring()
        if command.final is not None:
            final = command.final
            break
    behind: list[int] = []
    deadline = time.perf_counter() + spec.final_timeout_s
    while True:
        behind = [i for i in range(spec.clients) if clients.position(i) < final.get(clients.comparison[i], 0)]
        if not behind or time.perf_counter() > deadline:
            break
        await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return SseSoakResult(
        clients=spec.clients,
        connected_at_start=connected_at_start,
        connects=clients.connects,
        reconnects=clients.reconnects,
        drops=dict(clients.drops),
        connect_errors=dict(clients.connect_errors),
        events=sum(clients.events),
        events_per_client_min=min(clients.events, default=0),
        events_per_client_max=max(clients.events, default=0),
        clients_with_events=clients.clients_with_events,
        longest_silence_s=clients.longest_silence,
        silent_clients=sum(1 for at in clients.last_at if at <= clients.started),
        behind_at_end=len(behind),
        last_figures=clients.last_figures(),
    )


def main(argv: list[str]) -> int:
    spec = msgspec.json.decode(argv[0], type=SseSoakSpec)
    say(asyncio.run(run(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
