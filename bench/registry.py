"""The benchmark registry, and what a benchmark gets to work with (``Context``) and leaves behind (figures).

A benchmark is one async function that performs one run and records figures with ``ctx.record``; registering
it (``@benchmark(...)``) gives it a place in the order, a number of runs, and optionally a group: the
benchmarks of one group run interleaved, round by round, so that the noise of a shared machine falls on each
of them alike.
"""

import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec

from bench.config import BenchConfig
from bench.monitor import PipelineMonitor
from bench.stack import BenchStack


class Figure(msgspec.Struct):
    unit: str
    values: list[float] = msgspec.field(default_factory=list)
    label: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")


@dataclass
class Context:
    config: BenchConfig
    stack: BenchStack
    monitor: PipelineMonitor
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    """Where each target's vote ring goes on from, so that every vote is a change of mind."""
    shared: dict[str, object] = field(default_factory=dict)
    """Set-up done once for several benchmarks (e.g. the replay stream)."""

    def record(self, name: str, value: float, unit: str, label: str = "") -> None:
        figure = self.figures.setdefault(name, Figure(unit=unit, label=label))
        figure.values.append(float(value))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def take_cursor(self, target: str, votes: int) -> int:
        """The ring position for ``target``'s next run; reserves ``votes`` votes."""
        start = self.cursors.get(target, 0)
        self.cursors[target] = start + votes
        return start

    def advance_cursor(self, target: str, start: int, sent: int) -> None:
        """After a run: go on right after the votes actually sent."""
        self.cursors[target] = start + sent


BenchFunction = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Benchmark:
    name: str
    run: BenchFunction
    runs: int
    """Runs in a full run (a quick run does one)."""
    group: str | None
    doc: str


BENCHMARKS: list[Benchmark] = []


def benchmark(name: str, *, runs: int = 1, group: str | None = None) -> Callable[[BenchFunction], BenchFunction]:
    def register(function: BenchFunction) -> BenchFunction:
        BENCHMARKS.append(Benchmark(name, function, runs, group, (function.__doc__ or "").strip().split("\n")[0]))
        return function

    return register


def selected(config: BenchConfig) -> list[Benchmark]:
    if not config.only:
        return list(BENCHMARKS)
    return [b for b in BENCHMARKS if any(b.name.startswith(prefix) for prefix in config.only)]


BASELINES_OF = {
    "ingest": ("baseline.bare.post", "baseline.plain.post"),
    "read": ("baseline.bare.get", "baseline.plain.get"),
    "rebuild": ("baseline.nats.read",),
}
"""The baselines each benchmark's targets are ratios against: a run of the benchmark alone would have none."""


def with_baselines(names: list[str]) -> tuple[str, ...]:
    """The name prefixes asked for, plus the baselines of each benchmark among them."""
    chosen = [name.strip() for name in names if name.strip()]
    for name in list(chosen):
        for prefix, baselines in BASELINES_OF.items():
            if prefix.startswith(name) or name.startswith(prefix):
                chosen += [b for b in baselines if b not in chosen]
    return tuple(chosen)


def schedule(benchmarks: list[Benchmark], config: BenchConfig) -> list[tuple[Benchmark, int]]:
    """(benchmark, run number) in the order to run them: groups interleaved round by round."""
    order: list[tuple[Benchmark, int]] = []
    i = 0
    while i < len(benchmarks):
        group = benchmarks[i].group
        j = i + 1
        while group is not None and j < len(benchmarks) and benchmarks[j].group == group:
            j += 1
        members = benchmarks[i:j]
        rounds = max(config.runs_of(b.runs) for b in members)
        for round_number in range(rounds):
            order.extend((b, round_number) for b in members if round_number < config.runs_of(b.runs))
        i = j
    return order
