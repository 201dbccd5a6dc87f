"""Freshness: how long after its 202 a vote shows in the read API, while other votes stream in.

A steady background load votes on the hot comparison. Meanwhile probes, one at a time, each a new voter voting
*ship* on a comparison nobody else votes on: probe k is visible once that comparison's vote total is k above
where it started. One connection polls the GET (about every millisecond) and, when the read API has one, the
SSE stream (``/v1/comparisons/{id}/community/stream``) is watched too; each records when it first showed k.
"""

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.httpclient import HttpConnection, HttpError, build_request, sse_stream
from bench.load import LoadResult
from bench.stack import TOKEN_KEY, TOKEN_TTL_S
from services.votes.identity import VoterTokens


class _ToolVotes(msgspec.Struct):
    votes: int


class _Community(msgspec.Struct):
    tools: list[_ToolVotes]


_decoder = msgspec.json.Decoder(_Community)


def _total(body: bytes) -> int:
    return sum(tool.votes for tool in _decoder.decode(body).tools)


@dataclass
class Freshness:
    load: LoadResult
    get_delays: list[float] = field(default_factory=list)
    """From the 202's arrival (0 when the figures already showed the vote by then)."""
    sse_delays: list[float] = field(default_factory=list)
    get_from_send: list[float] = field(default_factory=list)
    """From the moment the vote was sent: what a voter waiting for the page to change sees."""
    sse_from_send: list[float] = field(default_factory=list)
    missed: int = 0
    sse_status: str = ""


@dataclass
class _Seen:
    base: int
    at: dict[int, float] = field(default_factory=dict)
    highest: int = 0

    def saw(self, total: int, when: float, progress: asyncio.Event) -> None:
        reached = total - self.base
        for k in range(self.highest + 1, reached + 1):
            self.at[k] = when
        if reached > self.highest:
            self.highest = reached
            progress.set()


async def measure_freshness(
    *,
    votes_port: int,
    read_port: int,
    comparison_id: str,
    tool_id: str,
    background: Coroutine[Any, Any, LoadResult],
    duration_s: float,
    timeout_s: float = 5.0,
) -> Freshness:
    path = f"/v1/comparisons/{comparison_id}/community"
    get_request = build_request("GET", path, read_port)
    poller = await HttpConnection.open(read_port)
    status, body = await poller.request(get_request)
    if status != 200:
        background.close()
        raise HttpError(f"GET {path} answered {status}")
    progress = asyncio.Event()
    by_get = _Seen(_total(body))
    by_sse = _Seen(by_get.base)
    sse_status = "freshness: no SSE endpoint on the read API, so only GET was measured"
    sse_live = False

    async def poll() -> None:
        while True:
            status, body = await poller.request(get_request)
            if status == 200:
                by_get.saw(_total(body), time.perf_counter(), progress)
            await asyncio.sleep(0.001)

    async def watch_sse(events: Any) -> None:
        async for data in events:
            with_total = _total(data)
            by_sse.saw(with_total, time.perf_counter(), progress)

    tasks: list[asyncio.Task[None]] = [asyncio.create_task(poll())]
    stream: AsyncGenerator[bytes, None] = sse_stream(read_port, path + "/stream")
    try:
        first = await asyncio.wait_for(anext(stream), 2.0)
        by_sse.saw(_total(first), time.perf_counter(), progress)
        tasks.append(asyncio.create_task(watch_sse(stream)))
        sse_live = True
        sse_status = "freshness: measured on GET and on the SSE stream"
    except (HttpError, OSError, TimeoutError, StopAsyncIteration, msgspec.DecodeError) as exc:
        if not isinstance(exc, HttpError) or " 404 " not in str(exc):
            sse_status = f"freshness: the SSE stream could not be read ({type(exc).__name__}: {str(exc)[:120]})"
        await stream.aclose()

    load_task = asyncio.create_task(background)
    tokens = VoterTokens([TOKEN_KEY.encode()], TOKEN_TTL_S)
    vote_path = f"/v1/comparisons/{comparison_id}/votes"
    vote_body = msgspec.json.encode({"tool_id": tool_id, "verdict": "ship"})
    voter = await HttpConnection.open(votes_port)
    found = Freshness(load=LoadResult("none", 0, 0.0, {}, 0, 0, 0, 0, 0, 0))
    try:
        await asyncio.sleep(1.0)  # let the background load settle
        deadline = time.perf_counter() + duration_s
        k = 0
        while time.perf_counter() < deadline and not load_task.done():
            k += 1
            headers = {"X-Voter-Token": tokens.issue(), "Content-Type": "application/json"}
            sent = time.perf_counter()
            status, reply = await voter.request(build_request("POST", vote_path, votes_port, headers, vote_body))
            accepted = time.perf_counter()
            if status != 202:
                raise HttpError(f"probe vote answered {status}: {reply[:200]!r}")

            def done(probe: int = k) -> bool:
                return probe in by_get.at and (not sse_live or probe in by_sse.at)

            give_up = accepted + timeout_s
            while not done() and time.perf_counter() < give_up:
                progress.clear()
                with_timeout = give_up - time.perf_counter()
                try:
                    await asyncio.wait_for(progress.wait(), max(0.0, with_timeout))
                except TimeoutError:
                    break
            if k in by_get.at:
                found.get_delays.append(max(0.0, by_get.at[k] - accepted))
                found.get_from_send.append(by_get.at[k] - sent)
            else:
                found.missed += 1
            if sse_live and k in by_sse.at:
                found.sse_delays.append(max(0.0, by_sse.at[k] - accepted))
                found.sse_from_send.append(by_sse.at[k] - sent)
            await asyncio.sleep(random.uniform(0.01, 0.04))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        poller.close()
        voter.close()
        found.load = await load_task
    found.sse_status = sse_status
    return found
