"""Watching the pipeline during a load run: stream tip, projector position, memory and CPU of each process.

The projector's lag at a moment is how long ago the oldest event it has not folded yet was appended: the time
since the stream's last sequence first passed the projector's position (interpolated between samples), 0 when
the projector is at the tip.
"""

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
from nats.aio.client import Client as NATS

from bench.procs import TreeSample, sample_trees
from contracts.subjects import VOTES_STREAM
from services.shared.config import NatsSettings
from services.shared.jetstream import connect


@dataclass(frozen=True)
class PipelineSample:
    t: float
    stream_seq: int
    position: int


@dataclass
class Watch:
    """What one monitored run saw."""

    pipeline: list[PipelineSample] = field(default_factory=list)
    trees: list[tuple[float, dict[str, TreeSample]]] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def lags(self) -> list[float]:
        return lag_series(self.pipeline)

    def peak_rss(self, name: str) -> float:
        return max((s[name].rss_mb for _, s in self.trees if name in s), default=0.0)

    def rss_at(self, name: str, fraction: float) -> float:
        """The tree's RSS at the first sample after ``fraction`` of the run."""
        at = self.started + fraction * (self.stopped - self.started)
        for t, samples in self.trees:
            if t >= at and name in samples:
                return samples[name].rss_mb
        return self.trees[-1][1][name].rss_mb if self.trees and name in self.trees[-1][1] else 0.0

    def cpu_share(self, name: str) -> float:
        """CPU time over wall time between the first and last sample (1.0 = one core)."""
        having = [(t, s[name]) for t, s in self.trees if name in s]
        if len(having) < 2 or having[-1][0] <= having[0][0]:
            return 0.0
        return (having[-1][1].cpu_s - having[0][1].cpu_s) / (having[-1][0] - having[0][0])

    def folded_per_s(self) -> float:
        """Events folded per second by the projector during the run."""
        if len(self.pipeline) < 2:
            return 0.0
        first, last = self.pipeline[0], self.pipeline[-1]
        return (last.position - first.position) / (last.t - first.t) if last.t > first.t else 0.0


def lag_series(samples: list[PipelineSample]) -> list[float]:
    lags = []
    for i, sample in enumerate(samples):
        if sample.position >= sample.stream_seq:
            lags.append(0.0)
            continue
        behind = sample.position + 1  # the first event not folded yet
        appeared = sample.t
        for j in range(i, -1, -1):
            if samples[j].stream_seq < behind:
                # It was appended between sample j and j + 1: interpolate.
                a, b = samples[j], samples[j + 1]
                span = b.stream_seq - a.stream_seq
                appeared = a.t + (b.t - a.t) * ((behind - a.stream_seq) / span if span else 1.0)
                break
            appeared = samples[j].t
        lags.append(max(0.0, sample.t - appeared))
    return lags


class PipelineMonitor:
    """Open once; ``watch()`` samples in the background until the returned stop function is called."""

    def __init__(self, nats_url: str, database_url: str) -> None:
        self._nats_url = nats_url
        self._database_url = database_url
        self._nc: NATS | None = None
        self._db: asyncpg.Connection | None = None
        # The background watch and the caller may ask at the same time; one connection takes one query at a time.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        self._nc = await connect(NatsSettings(self._nats_url), "shipskip-bench-monitor")
        self._db = await asyncpg.connect(self._database_url)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
        if self._nc is not None:
            await self._nc.close()

    async def stream_seq(self) -> int:
        assert self._nc is not None
        async with self._lock:
            info = await self._nc.jetstream().stream_info(VOTES_STREAM)
        return int(info.state.last_seq)

    async def position(self) -> int:
        assert self._db is not None
        async with self._lock:
            seq = await self._db.fetchval("select seq from projection_position where projection = 'tally'")
        return int(seq or 0)

    async def sample(self) -> PipelineSample:
        # Position first: the stream can only be further along by the time we ask it.
        position = await self.position()
        return PipelineSample(time.perf_counter(), await self.stream_seq(), position)

    async def wait_caught_up(self, timeout_s: float, target: int | None = None) -> float | None:
        """Seconds until the projector reaches ``target`` (default: the stream's tip now); None on timeout."""
        started = time.perf_counter()
        goal = await self.stream_seq() if target is None else target
        while time.perf_counter() - started < timeout_s:
            if await self.position() >= goal:
                return time.perf_counter() - started
            await asyncio.sleep(0.02)
        return None

    def watch(
        self, roots: Callable[[], dict[str, int]], interval_s: float = 0.1, trees_every: int = 5
    ) -> tuple[Watch, Callable[[], asyncio.Task[None]]]:
        """Start sampling now; returns the Watch being filled and a function that stops it (await its task)."""
        watch = Watch(started=time.perf_counter())
        stopping = asyncio.Event()

        async def loop() -> None:
            tick = 0
            while not stopping.is_set():
                watch.pipeline.append(await self.sample())
                if tick % trees_every == 0:
                    watch.trees.append((time.perf_counter(), sample_trees(roots())))
                tick += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval_s)
            watch.pipeline.append(await self.sample())
            watch.trees.append((time.perf_counter(), sample_trees(roots())))
            watch.stopped = time.perf_counter()

        task = asyncio.create_task(loop())

        def stop() -> asyncio.Task[None]:
            stopping.set()
            return task

        return watch, stop
