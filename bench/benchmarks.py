"""Every benchmark, one small function each, registered in the order they run (see ``bench.registry``).

Figures are named ``<path>.<figure>``: ``baseline.bare.post.rps``, ``ingest.votes_per_s``, ``read.p99_ms``...
``bench.report`` turns them into the targets table.
"""

import asyncio
import contextlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import cast, get_args

import asyncpg
import nats
from nats.js.errors import NotFoundError

from bench import natsraw
from bench.catalog_scale import run_catalog_scale
from bench.freshness import measure_freshness
from bench.load import LoadResult, LoadSpec, VoteScenario, run_load
from bench.monitor import Watch
from bench.profile import profile_process
from bench.registry import Context, benchmark
from bench.soak import run_soak
from contracts.subjects import TALLY_CONSUMER, VOTES_STREAM, VOTES_SUBJECTS
from services.serve import ServiceName
from services.shared.jetstream import ensure_votes_stream
from services.tally.store import PROJECTION_TABLES

WATCHED = ("votes", "read", "projector", "nats", "postgres", "redis")


def hot_comparison(ctx: Context) -> tuple[str, tuple[str, str]]:
    """The comparison all load goes to (the first of the catalogue)."""
    comparison = ctx.stack.catalog.comparisons[0]
    return comparison.id, (comparison.tools[0], comparison.tools[1])


def community_path(comparison_id: str) -> str:
    return f"/v1/comparisons/{comparison_id}/community"


def tokens_file(ctx: Context) -> Path:
    path = ctx.shared.get("tokens")
    if not isinstance(path, Path):
        path = ctx.stack.write_tokens(ctx.config.tokens)
        ctx.shared["tokens"] = path
    return path


async def vote_load(
    ctx: Context,
    target: str,
    port: int,
    duration_s: float,
    *,
    max_requests: int = 0,
    rate: float = 0.0,
    connections: int | None = None,
) -> LoadResult:
    """Votes on the hot comparison from the token ring, going on where ``target``'s last run stopped."""
    comparison_id, tools = hot_comparison(ctx)
    start = ctx.cursors.get(target, 0)
    spec = LoadSpec(
        port=port,
        connections=connections or ctx.config.connections,
        duration_s=duration_s,
        vote=VoteScenario(str(tokens_file(ctx)), comparison_id, tools, start),
        max_requests=max_requests,
        rate=rate,
    )
    result = await run_load(spec, "python" if rate else ctx.config.generator, ctx.config.wrk_threads)
    # Replies counted, plus what may have been in flight when the run stopped.
    ctx.cursors[target] = start + result.requests + spec.connections
    return result


async def get_load(ctx: Context, port: int, path: str, duration_s: float) -> LoadResult:
    spec = LoadSpec(port=port, connections=ctx.config.connections, duration_s=duration_s, path=path)
    return await run_load(spec, ctx.config.generator, ctx.config.wrk_threads)


async def warm(ctx: Context, key: str, port: int, *, vote: bool, path: str = "") -> None:
    """A short unrecorded run before a target's first measured one."""
    if ctx.shared.get("warm:" + key) or ctx.config.warmup_s <= 0:
        return
    ctx.shared["warm:" + key] = True
    if vote:
        await vote_load(ctx, key, port, ctx.config.warmup_s)
    else:
        await get_load(ctx, port, path, ctx.config.warmup_s)


def record_http(
    ctx: Context, prefix: str, result: LoadResult, ok: tuple[int, ...], rate: str = "rps", unit: str = "req/s"
) -> None:
    ctx.record(f"{prefix}.{rate}", result.rate(*ok), unit)
    ctx.record(f"{prefix}.p50_ms", result.p50_ms, "ms")
    ctx.record(f"{prefix}.p99_ms", result.p99_ms, "ms")
    ctx.record(f"{prefix}.failed", sum(result.statuses.values()) - result.count(*ok) + result.socket_errors, "replies")
    ctx.record(f"{prefix}.generator_cpu", result.generator_cpu, "cores")
    if result.count(*ok) == 0:
        raise RuntimeError(f"{prefix}: no successful reply: {result.statuses}, {result.socket_errors} socket errors")


def record_cpu(ctx: Context, prefix: str, watch: Watch, load: LoadResult | None = None) -> None:
    for name in WATCHED:
        share = watch.cpu_share(name)
        if share:
            ctx.record(f"{prefix}.cpu.{name}", share, "cores")
    if load is not None:
        ctx.record(f"{prefix}.cpu.generator", load.generator_cpu, "cores")


# -- HTTP: ingest and read, side by side with baselines 1 and 2, interleaved round by round -----------------


@benchmark("baseline.bare.post", runs=3, group="http")
async def bare_post(ctx: Context) -> None:
    """Baseline 1: a bare Litestar app answering the vote POST (same msgspec body), nothing behind it."""
    port = ctx.stack.apps["bare"].port
    await warm(ctx, "bare", port, vote=True)
    record_http(ctx, "baseline.bare.post", await vote_load(ctx, "bare", port, ctx.config.duration_s), (202,))


@benchmark("baseline.plain.post", runs=3, group="http")
async def plain_post(ctx: Context) -> None:
    """Baseline 2: the same POST, one Postgres transaction per vote (ballot upsert + counter row)."""
    port = ctx.stack.apps["plain"].port
    await warm(ctx, "plain", port, vote=True)
    record_http(ctx, "baseline.plain.post", await vote_load(ctx, "plain", port, ctx.config.duration_s), (202,))


@benchmark("ingest", runs=3, group="http")
async def ingest(ctx: Context) -> None:
    """shipskip's votes API: accepted votes/s at 32 connections, many voters, one hot comparison."""
    port = ctx.stack.service("votes").port
    assert port is not None
    await warm(ctx, "shipskip", port, vote=True)
    await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)
    watch, stop = ctx.monitor.watch(ctx.stack.process_roots)
    profiling = None
    if ctx.config.profile and not ctx.shared.get("profiled"):
        ctx.shared["profiled"] = True
        name = ctx.config.profile_service
        if name not in get_args(ServiceName):
            raise SystemExit(f"BENCH_PROFILE_SERVICE: {name!r} is none of {', '.join(get_args(ServiceName))}")
        pid = ctx.stack.service(cast(ServiceName, name)).process.pid
        profiling = asyncio.create_task(profile_process(pid, ctx.config.duration_s, ctx.config.results_dir, name))
    result = await vote_load(ctx, "shipskip", port, ctx.config.duration_s)
    await stop()
    record_http(ctx, "ingest", result, (202,), rate="votes_per_s", unit="votes/s")
    record_cpu(ctx, "ingest", watch, result)
    lags = watch.lags()
    ctx.record("projector.live_events_per_s", watch.folded_per_s(), "events/s")
    ctx.record("projector.max_lag_s", max(lags, default=0.0), "s")
    drained = await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)
    if drained is None:
        ctx.note(f"the projector had not caught up {ctx.config.drain_timeout_s:.0f}s after an ingest run")
    ctx.record("projector.drain_s", drained if drained is not None else ctx.config.drain_timeout_s, "s")
    if profiling is not None:
        for line in await profiling:
            ctx.note(line)


@benchmark("baseline.bare.get", runs=3, group="http")
async def bare_get(ctx: Context) -> None:
    """Baseline 1: the bare app answering a GET with a community reply of the same size (encoded once)."""
    port = ctx.stack.apps["bare"].port
    path = community_path(hot_comparison(ctx)[0])
    await warm(ctx, "bare-get", port, vote=False, path=path)
    record_http(ctx, "baseline.bare.get", await get_load(ctx, port, path, ctx.config.duration_s), (200,))


@benchmark("baseline.plain.get", runs=3, group="http")
async def plain_get(ctx: Context) -> None:
    """Baseline 2: the community figures computed from a select of the counter rows on each request."""
    port = ctx.stack.apps["plain"].port
    path = community_path(hot_comparison(ctx)[0])
    await warm(ctx, "plain-get", port, vote=False, path=path)
    record_http(ctx, "baseline.plain.get", await get_load(ctx, port, path, ctx.config.duration_s), (200,))


@benchmark("read", runs=3, group="http")
async def read(ctx: Context) -> None:
    """shipskip's read API: GET /v1/comparisons/{id}/community."""
    port = ctx.stack.service("read").port
    assert port is not None
    path = community_path(hot_comparison(ctx)[0])
    await warm(ctx, "read", port, vote=False, path=path)
    record_http(ctx, "read", await get_load(ctx, port, path, ctx.config.duration_s), (200,))


# -- freshness and memory ------------------------------------------------------------------------------------


@benchmark("freshness", runs=1)
async def freshness(ctx: Context) -> None:
    """202 -> visible in GET (and on SSE, when the read API has a stream) under a steady 2,000 votes/s."""
    votes_port = ctx.stack.service("votes").port
    read_port = ctx.stack.service("read").port
    assert votes_port is not None
    assert read_port is not None
    await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)
    probe = ctx.stack.catalog.comparisons[1 % len(ctx.stack.catalog.comparisons)]
    background = vote_load(
        ctx, "shipskip", votes_port, ctx.config.freshness_s + 1.0, rate=ctx.config.freshness_rate, connections=64
    )
    found = await measure_freshness(
        votes_port=votes_port,
        read_port=read_port,
        comparison_id=probe.id,
        tool_id=probe.tools[0],
        background=background,
        duration_s=ctx.config.freshness_s,
    )
    ctx.record("freshness.load_votes_per_s", found.load.rate(202), "votes/s")
    ctx.record("freshness.probes", len(found.get_delays), "probes")
    series = (
        ("get", found.get_delays),
        ("sse", found.sse_delays),
        ("get_from_send", found.get_from_send),
        ("sse_from_send", found.sse_from_send),
    )
    for name, delays in series:
        if delays:
            ordered = sorted(delays)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            ctx.record(f"freshness.{name}_p50_ms", ordered[len(ordered) // 2] * 1000, "ms")
            ctx.record(f"freshness.{name}_p99_ms", p99 * 1000, "ms")
            ctx.record(f"freshness.{name}_max_ms", ordered[-1] * 1000, "ms")
    if found.missed:
        ctx.note(f"freshness: {found.missed} probe(s) not seen within the timeout")
    ctx.note(found.sse_status)


@benchmark("memory", runs=1)
async def memory(ctx: Context) -> None:
    """Peak RSS of each service over a long vote run (1,000,000 votes), sampled from /proc."""
    port = ctx.stack.service("votes").port
    assert port is not None
    await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)
    watch, stop = ctx.monitor.watch(ctx.stack.process_roots, interval_s=0.25, trees_every=2)
    result = await vote_load(ctx, "shipskip", port, ctx.config.soak_max_s, max_requests=ctx.config.soak_votes)
    await stop()
    drained = await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)
    ctx.record("memory.votes_sent", result.count(202), "votes")
    ctx.record("memory.votes_per_s", result.rate(202), "votes/s")
    ctx.record("memory.p99_ms", result.p99_ms, "ms")
    ctx.record("memory.projector_max_lag_s", max(watch.lags(), default=0.0), "s")
    ctx.record("memory.projector_drain_s", drained if drained is not None else ctx.config.drain_timeout_s, "s")
    for name in ("votes", "read", "projector", "nats"):
        if not any(name in samples for _, samples in watch.trees):
            continue
        ctx.record(f"memory.{name}.peak_mb", watch.peak_rss(name), "MiB")
        ctx.record(f"memory.{name}.after_warmup_mb", watch.rss_at(name, 0.2), "MiB")
        ctx.record(f"memory.{name}.end_mb", watch.rss_at(name, 1.0), "MiB")
        largest = max((s[name].largest_rss_mb for _, s in watch.trees if name in s), default=0.0)
        ctx.record(f"memory.{name}.largest_process_peak_mb", largest, "MiB")
    record_cpu(ctx, "memory", watch, result)


@benchmark("soak", runs=1)
async def soak(ctx: Context) -> None:
    """10 minutes of paced voting and reading with 500 open SSE clients: memory over time, errors, exact tallies."""
    await run_soak(ctx)


# -- NATS baseline, and the replay of a large stream ---------------------------------------------------------


@benchmark("baseline.nats.publish", runs=3)
async def nats_publish(ctx: Context) -> None:
    """Baseline 3: acknowledged nats-py publishes, 256 in flight (a task per slot, and publish_async)."""
    url = ctx.stack.addresses.nats_url
    count = ctx.config.publish_messages
    for name, publisher in (("tasks", natsraw.publish), ("publish_async", natsraw.publish_async)):
        await natsraw.create_scratch_stream(url)
        events = natsraw.synthetic_events(ctx.stack.catalog, count, subject_prefix=natsraw.SCRATCH_PREFIX)
        _, seconds = await publisher(url, events, ctx.config.publish_in_flight)
        ctx.record(f"baseline.nats.publish.{name}_per_s", count / seconds, "msgs/s")
    await natsraw.drop_scratch_stream(url)


async def replay_stream(ctx: Context) -> int:
    """Once: stop the projector, and fill a fresh VOTES stream with ``config.events`` events (as fast as nats-py
    goes). Returns the stream's last sequence."""
    loaded = ctx.shared.get("replay")
    if isinstance(loaded, int):
        return loaded
    ctx.stack.stop_projector()
    url = ctx.stack.addresses.nats_url
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(VOTES_STREAM)
        await ensure_votes_stream(js, 120.0)
    finally:
        await nc.close()
    count = ctx.config.events
    events = natsraw.synthetic_events(ctx.stack.catalog, count)
    _, seconds = await natsraw.publish_async(url, events, ctx.config.publish_in_flight)
    ctx.record("replay.load_events_per_s", count / seconds, "events/s")
    last = await ctx.monitor.stream_seq()
    if last != count:
        raise RuntimeError(f"the replay stream holds {last} events, expected {count}")
    ctx.shared["replay"] = last
    return last


@benchmark("baseline.nats.read", runs=2)
async def nats_read(ctx: Context) -> None:
    """Baseline 3: reading the replay stream back without acks (an ordered consumer, and pull fetch)."""
    count = await replay_stream(ctx)
    url = ctx.stack.addresses.nats_url
    ordered = count / await natsraw.read_back_ordered(url, VOTES_STREAM, VOTES_SUBJECTS, count)
    ctx.record("baseline.nats.read.ordered_per_s", ordered, "msgs/s")
    # Pull fetch is 3-4 times slower in nats-py (a task and a timer per message): a fifth of the stream tells its
    # rate as well as the whole would.
    some = max(1, min(count, 200_000, count // 5 if count >= 1_000_000 else count))
    pull = some / await natsraw.read_back(url, VOTES_STREAM, VOTES_SUBJECTS, some)
    ctx.record("baseline.nats.read.pull_per_s", pull, "msgs/s")
    ctx.record("baseline.nats.read.best_per_s", max(pull, ordered), "msgs/s")


async def fresh_projection(ctx: Context) -> None:
    """Empty projection tables and no tally consumer: the projector's next start folds from the beginning."""
    ctx.stack.stop_projector()
    nc = await nats.connect(ctx.stack.addresses.nats_url)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_consumer(VOTES_STREAM, TALLY_CONSUMER)
    finally:
        await nc.close()
    conn = await asyncpg.connect(ctx.stack.addresses.database_url)
    try:
        await conn.execute("truncate " + ", ".join(PROJECTION_TABLES) + ", dead_letters")
    finally:
        await conn.close()


@benchmark("projector.catchup", runs=2)
async def projector_catchup(ctx: Context) -> None:
    """The live projector folding the whole replay stream into empty tables (the rebuild's stand-in)."""
    count = await replay_stream(ctx)
    await fresh_projection(ctx)
    started = time.perf_counter()
    ctx.stack.restart_projector(wait=False)
    watch, stop = ctx.monitor.watch(ctx.stack.process_roots, interval_s=0.25, trees_every=4)
    timeout = max(120.0, count / 2000)
    seconds = await ctx.monitor.wait_caught_up(timeout, target=count)
    await stop()
    if seconds is None:
        raise RuntimeError(f"the projector folded {await ctx.monitor.position()} of {count} events in {timeout:.0f}s")
    elapsed = time.perf_counter() - started
    ctx.record("projector.catchup_events_per_s", count / elapsed, "events/s")
    ctx.record("projector.catchup_s", elapsed, "s")
    record_cpu(ctx, "projector.catchup", watch)


def _rebuild_command() -> list[str] | None:
    """``shipskip rebuild`` and BENCH_REBUILD_ARGS, when the installed shipskip has that command."""
    base = [sys.executable, "-m", "services.cli", "rebuild"]
    try:
        probe = subprocess.run([*base, "--help"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if probe.returncode != 0:
        return None
    return base + shlex.split(os.environ.get("BENCH_REBUILD_ARGS", ""))


@benchmark("rebuild", runs=2)
async def rebuild(ctx: Context) -> None:
    """``shipskip rebuild`` replaying the whole replay stream into fresh tables, timed from the outside."""
    command = _rebuild_command()
    if command is None:
        ctx.note("rebuild: this shipskip has no `rebuild` command yet; projector.catchup stands in for it")
        return
    count = await replay_stream(ctx)
    ctx.stack.stop_projector()
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**os.environ, **ctx.stack.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    timeout = max(300.0, count / 2000)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"`{shlex.join(command)}` did not finish in {timeout:.0f}s") from None
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        tail = out.decode(errors="replace")[-1500:]
        raise RuntimeError(f"`{shlex.join(command)}` exited {process.returncode}:\n{tail}")
    ctx.record("rebuild.events_per_s", count / elapsed, "events/s")
    ctx.record("rebuild.seconds", elapsed, "s")


# -- the catalogue at a real site's scale (last: it restarts every service) ----------------------------------------


@benchmark("catalog.scale", runs=2)
async def catalog_scale(ctx: Context) -> None:
    """10,000 tools and 50,000 comparisons against the demo's: load, memory, start-up, p99s, SSE cost, a change."""

    async def latencies(ctx: Context, label: str) -> None:
        votes_port, read_port = ctx.stack.service("votes").port, ctx.stack.service("read").port
        assert votes_port is not None
        assert read_port is not None
        if ctx.config.warmup_s > 0:  # the services were just restarted: warm them, on the ring's next votes
            await vote_load(ctx, "shipskip", votes_port, ctx.config.warmup_s)
        await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)
        vote = await vote_load(ctx, "shipskip", votes_port, ctx.config.duration_s)
        record_http(ctx, f"catalog.scale.{label}.vote", vote, (202, 200))
        await ctx.monitor.wait_caught_up(ctx.config.drain_timeout_s)  # the read API is not still taking them in
        path = community_path(hot_comparison(ctx)[0])
        record_http(
            ctx, f"catalog.scale.{label}.read", await get_load(ctx, read_port, path, ctx.config.duration_s), (200,)
        )

    await run_catalog_scale(ctx, latencies)
