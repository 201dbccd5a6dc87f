"""What the soak leaves behind: ``SoakReport``, its Markdown (tables of memory and load over time, errors by kind,
the exactness check), ``bench/results/soak.json`` and ``soak.md``, and its section in docs/performance.md."""

from collections.abc import Sequence
from pathlib import Path

import msgspec

from bench.load import LoadResult
from bench.monitor import Watch
from bench.results_files import write_results
from bench.soak_check import Exactness
from bench.soak_sse import SseSoakResult
from bench.soak_votes import Bucket, VoteSoakResult

WARMUP_FRACTION = 0.2
"""Memory is held to be flat when it grows little between the end of this share of the run and the end."""

SOAK_BEGIN, SOAK_END = "<!-- soak:begin -->", "<!-- soak:end -->"


class MemoryRow(msgspec.Struct):
    """One process tree's resident memory (VmRSS, MiB) over the soak."""

    name: str
    start: float
    at: list[float]
    """At the end of each time bucket."""
    low: float
    high: float
    after_warmup: float
    end: float
    slope_per_min: float
    """Least-squares slope after the warm-up."""
    flat: bool
    """end − after warm-up ≤ max(10 MiB, 10 % of after warm-up), as the memory benchmark judges it."""


class SoakReport(msgspec.Struct):
    command: str
    mode: str
    machine: dict[str, str]
    settings: dict[str, float]
    duration_s: float
    """Of the load (the drain and the checks come after)."""
    bucket_s: float
    memory: list[MemoryRow]
    cpu: dict[str, float]
    """Cores used on average during the load, per process tree (the load generators' too)."""
    projector_max_lag_s: float
    drain_s: float
    votes: VoteSoakResult
    reads: LoadResult
    sse: SseSoakResult
    exactness: Exactness
    errors: dict[str, int]
    """Every error of the soak by where and what (``errors_by_kind``); empty for a clean run."""
    sse_on_final: int
    """SSE clients whose last figures were the fold's final tallies."""
    notes: list[str] = []

    @property
    def passed(self) -> bool:
        """Nothing lost or counted twice, and every live page shows the final figures: a correctness promise, so
        ``python -m bench`` exits 1 without it (unlike a speed target that is not met)."""
        return self.exactness.exact and self.sse_on_final == self.sse.clients


def flat(after_warmup: float, end: float) -> bool:
    return end - after_warmup <= max(10.0, 0.1 * after_warmup)


def _slope(points: Sequence[tuple[float, float]]) -> float:
    """MiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 60.0


def memory_rows(watch: Watch, names: Sequence[str], bucket_s: float, buckets: int) -> list[MemoryRow]:
    """Each tree at the end of each bucket (the last: at the end of the watch), its range, and its growth."""
    rows = []
    span = watch.stopped - watch.started
    for name in names:
        series = [(t - watch.started, s[name].rss_mb) for t, s in watch.trees if name in s]
        if not series:
            continue

        def at(offset: float, series: list[tuple[float, float]] = series) -> float:
            return next((v for t, v in series if t >= offset), series[-1][1])

        warm = at(WARMUP_FRACTION * span)
        end = series[-1][1]
        values = [v for _, v in series]
        rows.append(
            MemoryRow(
                name=name,
                start=series[0][1],
                at=[at((k + 1) * bucket_s if k < buckets - 1 else span) for k in range(buckets)],
                low=min(values),
                high=max(values),
                after_warmup=warm,
                end=end,
                slope_per_min=_slope([(t, v) for t, v in series if t >= WARMUP_FRACTION * span]),
                flat=flat(warm, end),
            )
        )
    return rows


def errors_by_kind(votes: VoteSoakResult, reads: LoadResult, sse: SseSoakResult) -> dict[str, int]:
    """Every error of the soak, by where and what; an empty dict is a clean run."""
    errors: dict[str, int] = {}
    for status, count in sorted(votes.statuses.items()):
        if not status.startswith("2"):
            errors[f"votes: HTTP {status}"] = count
    for status, count in sorted(reads.statuses.items()):
        if not status.startswith("2"):
            errors[f"reads: HTTP {status}"] = count
    kinds = {
        "votes: client timeouts": votes.timeouts,
        "votes: broken connections": votes.connection_errors,
        "votes: given up without an answer": votes.unknown,
        "reads: client timeouts": reads.timeouts,
        "reads: broken connections": reads.socket_errors - reads.timeouts,
        "SSE: clients not connected at the start": sse.clients - sse.connected_at_start,
        "SSE: clients silent during the load": sse.silent_clients,
        "SSE: clients behind the final figures": sse.behind_at_end,
    }
    kinds.update({f"SSE: stream {kind}": count for kind, count in sse.drops.items()})
    kinds.update({f"SSE: connect {kind}": count for kind, count in sse.connect_errors.items()})
    errors.update({kind: count for kind, count in kinds.items() if count})
    return errors


def _mib(value: float) -> str:
    return f"{value:.0f}"


def _minutes(bucket_s: float, k: int) -> str:
    end = (k + 1) * bucket_s
    return f"{end / 60:.0f}′" if bucket_s >= 60 else f"{end:.0f} s"


def _tallies_line(exact: Exactness) -> str:
    parts = []
    for comparison, tools in sorted(exact.fold.items()):
        parts.append(comparison + " " + " / ".join(f"{ship}:{skip}" for ship, skip in tools.values()))
    return "; ".join(parts)


def markdown(report: SoakReport) -> str:
    m, votes, reads, sse, exact = report.machine, report.votes, report.reads, report.sse, report.exactness
    s = report.settings
    buckets = len(report.memory[0].at) if report.memory else 0
    heads = [_minutes(report.bucket_s, k) for k in range(buckets)]
    verdict = "✅ exact" if exact.exact else "❌ NOT exact"
    lines = [
        f"Measured by `{report.command}` ({report.mode}) on {m.get('started', '?')}: {report.duration_s / 60:.1f} min "
        f"of load, {s['vote_rate']:.0f} votes/s and {s['read_rate']:.0f} reads/s paced, {s['sse_clients']:.0f} SSE "
        f"clients, {s['voters']:,.0f} voters on {s['comparisons']:.0f} comparisons.",
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory', '?')}, {m.get('os', '?')}; "
        f"load average {m.get('load_average_at_start', '?')} at the start, {m.get('load_average_at_end', '?')} at "
        "the end — the machine is shared with other engineers running tests, so CPU and latency figures are noisy.",
        "",
        f"**Tallies after the drain: {verdict}.** {exact.accepted:,} votes answered 202, {exact.stream_events:,} "
        f"events of the soak's comparisons in the stream ({exact.missing} missing, {exact.unexpected} unexpected, "
        f"{exact.repeated} repeated); the project's fold over the stream "
        f"{'=' if exact.fold_equals_generator else '≠'} the generator's own count of its ballots, Postgres "
        f"{'=' if exact.postgres_equals_fold else '≠'} the fold, the read API "
        f"{'=' if exact.read_api_equals_fold else '≠'} the fold ({exact.read_api_wait_s:.1f} s after the drain); "
        f"{exact.uncounted} uncounted; projector at {exact.projector_position:,} of {exact.stream_position:,}. "
        f"Final ship:skip per tool: {_tallies_line(exact)}.",
        "",
        "| resident memory (MiB) | start | " + " | ".join(heads) + " | min – max | after warm-up → end | flat |",
        "|---|" + "---|" * (buckets + 4),
    ]
    for row in report.memory:
        lines.append(
            f"| {row.name} | {_mib(row.start)} | "
            + " | ".join(_mib(v) for v in row.at)
            + f" | {_mib(row.low)} – {_mib(row.high)} | {_mib(row.after_warmup)} → {_mib(row.end)} "
            f"({row.slope_per_min:+.2f} MiB/min) | {'✅' if row.flat else '❌'} |"
        )
    per_bucket = (votes.buckets + [Bucket()] * buckets)[:buckets]
    lines += [
        "",
        "| per time bucket | " + " | ".join(heads) + " | all |",
        "|---|" + "---|" * (buckets + 1),
        "| votes accepted (202) | " + " | ".join(f"{b.accepted:,}" for b in per_bucket) + f" | {votes.accepted:,} |",
        "| votes unchanged (200) | " + " | ".join(f"{b.unchanged:,}" for b in per_bucket) + f" | {votes.unchanged:,} |",
        "| vote errors | "
        + " | ".join(f"{b.errors:,}" for b in per_bucket)
        + f" | {sum(b.errors for b in votes.buckets):,} |",
        "| SSE clients that got events | "
        + " | ".join(f"{n}" for n in (sse.clients_with_events + [0] * buckets)[:buckets])
        + f" | {sse.clients} |",
        "",
    ]
    actions = ", ".join(f"{count:,} {name}s" for name, count in sorted(votes.actions.items()))
    cpu = ", ".join(f"{name} {share:.2f}" for name, share in report.cpu.items())
    errors = report.errors
    lines += [
        f"- Votes: {votes.votes:,} answered in {votes.duration_s:.0f} s ({votes.votes / votes.duration_s:,.0f}/s: "
        f"{actions}); latency p50 {votes.p50_ms:.1f} ms, p99 {votes.p99_ms:.1f} ms, max {votes.max_ms:.0f} ms; "
        f"sends late against the pace: p99 {votes.late_p99_ms:.1f} ms, max {votes.late_max_ms:.0f} ms.",
        f"- Reads: {sum(reads.statuses.values()):,} GETs ({reads.rate():,.0f}/s) of the comparisons' figures, one by "
        f"one and all together; p50 {reads.p50_ms:.1f} ms, p99 {reads.p99_ms:.1f} ms, max {reads.max_ms:.0f} ms.",
        f"- SSE: {sse.connected_at_start} of {sse.clients} clients connected before the load, {sse.events:,} events "
        f"received ({sse.events_per_client_min:,} – {sse.events_per_client_max:,} per client), longest silence on "
        f"any stream during the load {sse.longest_silence_s:.1f} s, {sse.reconnects} reconnects; "
        f"{report.sse_on_final} of {sse.clients} ended on the final figures.",
        f"- Projector: largest lag {report.projector_max_lag_s:.2f} s during the load, drained "
        f"{report.drain_s:.2f} s after it.",
        f"- CPU (cores, average over the load): {cpu}.",
        "- Errors: "
        + (", ".join(f"{kind} {count:,}" for kind, count in errors.items()) if errors else "none of any kind")
        + ".",
    ]
    lines += [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def write(report: SoakReport, results_dir: Path) -> tuple[Path, Path]:
    return write_results(results_dir, "soak", report, markdown(report))
