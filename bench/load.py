"""HTTP load: what to send (``LoadSpec``), what came back (``LoadResult``), and the two generators.

- ``wrk`` (Debian's package) with ``bench/lua/bench.lua``: the default, a few percent of a core per 10k req/s.
- ``python``: ``python -m bench.pyload``, a closed loop (or a paced one, ``rate``) on ``bench.httpclient``;
  used for paced load (freshness) and when wrk is missing.

Both run as child processes whose CPU time is measured (``LoadResult.generator_cpu``, in cores), so a report can
show that the generator was not the bottleneck. Each run is bounded by ``duration_s`` and, optionally,
``max_requests``, and stops by itself.
"""

import asyncio
import math
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path

import msgspec

LUA_SCRIPT = Path(__file__).parent / "lua" / "bench.lua"


class VoteScenario(msgspec.Struct, frozen=True):
    """Votes on one comparison from a ring of voter tokens (see bench.lua for the order)."""

    tokens_file: str
    comparison_id: str
    tools: tuple[str, str]
    cursor: int = 0
    """Index of the first vote in the ring; advance it between runs so that every vote is a change."""

    @property
    def path(self) -> str:
        return f"/v1/comparisons/{self.comparison_id}/votes"


class LoadSpec(msgspec.Struct, frozen=True):
    port: int
    connections: int
    duration_s: float
    path: str = "/"
    """The GET path; unused for votes."""
    paths: tuple[str, ...] = ()
    """GET paths taken in turn instead of ``path`` (python generator only)."""
    vote: VoteScenario | None = None
    max_requests: int = 0
    """Stop after about this many replies (0: only the duration bounds the run)."""
    rate: float = 0.0
    """Requests per second, paced (python generator only); 0: as fast as the connections go."""
    timeout_s: float = 5.0


class LoadResult(msgspec.Struct):
    generator: str
    requests: int
    duration_s: float
    statuses: dict[str, int]
    socket_errors: int
    """Requests without an answer: broken connections and timeouts."""
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_s: float = 0.0
    timeouts: int = 0
    """Of ``socket_errors``, those that timed out (python generator only)."""

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(str(status), 0) for status in statuses)

    def rate(self, *statuses: int) -> float:
        """Replies per second with one of ``statuses`` (all replies when none is given)."""
        count = self.count(*statuses) if statuses else sum(self.statuses.values())
        return count / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))

    @property
    def generator_cpu(self) -> float:
        """The generator's CPU time over the run's wall time: 1.0 is one core busy throughout."""
        return self.cpu_s / self.duration_s if self.duration_s > 0 else 0.0


class LoadError(RuntimeError):
    """The generator failed or printed nothing we understand."""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _run_child(command: list[str], timeout_s: float) -> tuple[int, str, str, float]:
    """Run a generator; (exit code, stdout, stderr, its CPU seconds). Killed if it overruns ``timeout_s``."""
    cpu_before = _children_cpu()
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
    code = await process.wait()
    return code, out.decode(errors="replace"), err.decode(errors="replace"), _children_cpu() - cpu_before


class _WrkSummary(msgspec.Struct):
    requests: int
    duration_us: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    statuses: dict[str, int]


def wrk_command(spec: LoadSpec, threads: int = 1) -> list[str]:
    wrk = wrk_path()
    if wrk is None:
        raise LoadError("wrk is not installed (apt-get install wrk)")
    threads = max(1, min(threads, spec.connections))
    per_thread = math.ceil(spec.max_requests / threads) if spec.max_requests else 0
    url = f"http://127.0.0.1:{spec.port}{spec.vote.path if spec.vote else spec.path}"
    command = [
        wrk,
        "-t", str(threads),
        "-c", str(spec.connections),
        "-d", f"{max(1, math.ceil(spec.duration_s))}s",
        "--timeout", f"{max(1, math.ceil(spec.timeout_s))}s",
        "-s", str(LUA_SCRIPT),
        url,
        "--",
    ]  # fmt: skip
    if spec.vote is None:
        command += ["get", str(per_thread)]
    else:
        v = spec.vote
        command += ["vote", str(per_thread), v.tokens_file, v.comparison_id, *v.tools, str(v.cursor), str(threads)]
    return command


async def run_wrk(spec: LoadSpec, threads: int = 1) -> LoadResult:
    if spec.rate or spec.paths:
        raise LoadError("wrk cannot pace requests nor vary the path; use the python generator")
    command = wrk_command(spec, threads)
    started = time.monotonic()
    code, out, err, cpu = await _run_child(command, spec.duration_s + spec.timeout_s + 30)
    wall = time.monotonic() - started
    found = re.search(r"^BENCH_JSON (.*)$", out, re.MULTILINE)
    if code != 0 or found is None:
        raise LoadError(f"wrk exited {code}:\n{out[-2000:]}\n{err[-2000:]}")
    summary = msgspec.json.decode(found.group(1), type=_WrkSummary)
    latency = summary.latency_us
    duration = summary.duration_us / 1e6 or wall
    return LoadResult(
        generator="wrk",
        requests=summary.requests,
        duration_s=duration,
        statuses=summary.statuses,
        socket_errors=sum(count for kind, count in summary.errors.items() if kind != "status"),
        mean_ms=latency["mean"] / 1000,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        cpu_s=cpu,
    )


async def run_python(spec: LoadSpec) -> LoadResult:
    command = [sys.executable, "-m", "bench.pyload", msgspec.json.encode(spec).decode()]
    code, out, err, cpu = await _run_child(command, spec.duration_s + spec.timeout_s + 30)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise LoadError(f"bench.pyload exited {code}:\n{out[-2000:]}\n{err[-2000:]}")
    result = msgspec.json.decode(lines[-1], type=LoadResult)
    result.cpu_s = cpu
    return result


async def run_load(spec: LoadSpec, generator: str = "auto", wrk_threads: int = 1) -> LoadResult:
    """Run ``spec`` with wrk (``auto`` picks it when installed and the load is not paced) or python."""
    if generator == "wrk" or (generator == "auto" and wrk_path() is not None and not spec.rate and not spec.paths):
        return await run_wrk(spec, wrk_threads)
    return await run_python(spec)


def generator_name(generator: str = "auto") -> str:
    if generator == "auto":
        return "wrk" if wrk_path() is not None else "python"
    return generator


def cpu_count() -> int:
    return os.cpu_count() or 1
