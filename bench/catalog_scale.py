"""``catalog.scale``: the catalogue at a real site's size, against the demo's, through the real CLI and services.

Three catalogues, loaded in turn with ``shipskip catalog load --force`` (bench/synthetic_catalog.py):
- *demo*: infra/catalog/demo.json (3 tools, 2 comparisons);
- *small*: the demo's, ``scale_tools`` tools with full text, and the ``scale_sse_comparisons`` comparisons the
  traffic goes to;
- *big*: the same tools, the demo's comparisons and ``scale_comparisons`` in all (the traffic's among them).

Each round (two in a full run, demo / small / big in turn) measures, for each catalogue, each service's start-up
time and resident memory (process tree, right after a restart with that catalogue); with demo and big, the vote
and read p99 (the same wrk runs as ``ingest`` and ``read``, on the demo's hot comparison); with small and big, a
paced vote run spread over the traffic's comparisons with ``scale_sse_clients`` SSE clients on them, and the CPU
the read API and the projector spend per accepted vote (the cost of comparisons without traffic is the difference
between small and big); with big, the load's wall time and until every service serves it, and then the time for a
one-tool change to show in every service (the read API's tool page and the votes service's comparison page; the
projector holds no catalogue). The demo catalogue is loaded again at the end.
"""

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import msgspec

from bench.procs import sample_trees
from bench.registry import Context
from bench.soak import Child, write_tokens
from bench.soak_check import served_tallies
from bench.soak_sse import SseSoakResult, SseSoakSpec
from bench.soak_votes import SoakComparison, VoteSoakResult, VoteSoakSpec
from bench.synthetic_catalog import synthetic_catalog
from contracts.catalog import Catalog, decode_catalog, encode_catalog
from infra.stack.bootstrap import DEMO_CATALOG
from infra.stack.processes import start_service
from infra.stack.servers import free_port
from services.serve import ServiceName

SERVICES: tuple[ServiceName, ...] = ("votes", "read", "projector")
BATCH = 50
"""Comparisons per /v1/community request (the read API's MAX_BATCH)."""


class Catalogs(msgspec.Struct, frozen=True):
    demo: Catalog
    small: Catalog
    big: Catalog
    traffic: list[SoakComparison]


def make_catalogs(tools: int, comparisons: int, traffic: int) -> Catalogs:
    demo = decode_catalog(DEMO_CATALOG.read_bytes())
    synthetic = synthetic_catalog(tools, comparisons - len(demo.comparisons))
    step = max(1, len(synthetic.comparisons) // traffic)
    busy = synthetic.comparisons[::step][:traffic]  # spread over the id order
    every_tool = [*demo.tools, *synthetic.tools]
    return Catalogs(
        demo=demo,
        small=Catalog(tools=every_tool, comparisons=[*demo.comparisons, *busy]),
        big=Catalog(tools=every_tool, comparisons=[*demo.comparisons, *synthetic.comparisons]),
        traffic=[SoakComparison(c.id, (c.tools[0], c.tools[1])) for c in busy],
    )


async def load_file(ctx: Context, path: Path) -> tuple[float, str]:
    """``shipskip catalog load --force PATH``, timed from the outside; (seconds, its output)."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "catalog", "load", "--force", str(path),
        env={**os.environ, **ctx.stack.env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 600)
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"catalog load {path.name} exited {process.returncode}: {out.decode()[-1500:]}")
    return elapsed, out.decode()


def restart(ctx: Context, name: ServiceName) -> float:
    """Stop the service and start it again; seconds until it is ready (the catalogue read is part of its start)."""
    stack = ctx.stack
    old = stack.services.pop(name, None)
    if old is not None:
        old.stop()
    started = time.perf_counter()
    stack.services[name] = start_service(name, stack.env, stack.log_dir, None if name == "projector" else free_port())
    return time.perf_counter() - started


def urls(ctx: Context) -> tuple[str, str]:
    return ctx.stack.service("votes").url, ctx.stack.service("read").url


async def until_served(ctx: Context, comparison_id: str, timeout_s: float = 120.0) -> float:
    """Seconds until the read API and the votes service both serve a comparison the load added."""
    votes_url, read_url = urls(ctx)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as client:
        while time.perf_counter() - started < timeout_s:
            answers = await asyncio.gather(
                client.get(f"{read_url}/v1/comparisons/{comparison_id}/community"),
                client.get(f"{votes_url}/compare/{comparison_id}"),
            )
            if all(answer.status_code == 200 for answer in answers):
                return time.perf_counter() - started
            await asyncio.sleep(0.02)
    raise RuntimeError(f"the services did not serve the loaded catalogue within {timeout_s:.0f} s")


async def until_entry(ctx: Context, tool_id: str, comparison_id: str, entry: str, timeout_s: float = 60.0) -> float:
    votes_url, read_url = urls(ctx)
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=10) as client:
        while time.perf_counter() - started < timeout_s:
            tool, page = await asyncio.gather(
                client.get(f"{read_url}/v1/tools/{tool_id}"), client.get(f"{votes_url}/compare/{comparison_id}")
            )
            if tool.json()["tool"]["entry"] == entry and entry in page.text:
                return time.perf_counter() - started
            await asyncio.sleep(0.01)
    raise RuntimeError(f"the change of {tool_id} did not show in every service within {timeout_s:.0f} s")


def record_services(ctx: Context, label: str) -> None:
    """Each service restarted on the catalogue now loaded: start-up time and resident memory."""
    for name in SERVICES:
        ctx.record(f"catalog.scale.startup.{name}.{label}_s", restart(ctx, name), "s")
    time.sleep(1.0)  # let the start-up's garbage settle
    trees = sample_trees({name: ctx.stack.service(name).process.pid for name in SERVICES})
    for name in SERVICES:
        ctx.record(f"catalog.scale.rss.{name}.{label}_mb", trees[name].rss_mb, "MiB")


async def positions(read_url: str, ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(ids), BATCH):
        _, batch = await served_tallies(read_url, ids[start : start + BATCH])
        found.update(batch)
    return found


async def sse_run(ctx: Context, catalogs: Catalogs, label: str) -> None:
    """Paced votes over the traffic's comparisons with SSE clients on them; CPU per vote of the read API and the
    projector, and the events the clients got."""
    config, stack = ctx.config, ctx.stack
    _, read_url = urls(ctx)
    ids = [c.id for c in catalogs.traffic]
    logs = stack.log_dir
    await ctx.monitor.wait_caught_up(config.drain_timeout_s)
    read_port, votes_port = stack.service("read").port, stack.service("votes").port
    assert read_port is not None
    assert votes_port is not None
    # New voters for every run: each vote is a first ballot, so that each changes the figures.
    tokens = stack.work_dir / f"scale-tokens-{label}-{len(ctx.figures)}.txt"
    write_tokens(tokens, config.soak_voter_tokens)
    sse_spec = SseSoakSpec(read_port, config.scale_sse_clients, ids, bucket_s=config.scale_run_s, buckets=1)
    sse = await Child.start("bench.soak_sse", sse_spec, logs / f"scale-sse-{label}.log", talk=True)
    votes: Child | None = None
    try:
        ready = msgspec.json.decode(await sse.line(sse_spec.connect_timeout_s + 30), type=dict[str, int])
        if ready.get("ready", 0) < config.scale_sse_clients:
            ctx.note(
                f"catalog.scale ({label}): {ready.get('ready')} of {config.scale_sse_clients} SSE clients connected"
            )
        roots = {name: stack.service(name).process.pid for name in ("read", "projector")}
        before = sample_trees(roots)
        await sse.send({"start": True})
        spec = VoteSoakSpec(
            port=votes_port,
            rate=config.scale_vote_rate,
            connections=32,
            duration_s=config.scale_run_s,
            tokens_file=str(tokens),
            comparisons=catalogs.traffic,
            accepted_file=str(stack.work_dir / f"scale-accepted-{label}.txt"),
            bucket_s=config.scale_run_s,
        )
        votes = await Child.start("bench.soak_votes", spec, logs / f"scale-votes-{label}.log")
        result = msgspec.json.decode(await votes.last_line(config.scale_run_s + 180), type=VoteSoakResult)
        await ctx.monitor.wait_caught_up(config.drain_timeout_s)
        await sse.send({"drain": True})
        await sse.send({"final": await positions(read_url, ids)})
        seen = msgspec.json.decode(await sse.last_line(sse_spec.final_timeout_s + 30), type=SseSoakResult)
        after = sample_trees(roots)
    finally:
        sse.stop()
        if votes is not None:
            votes.stop()
    accepted = max(result.accepted, 1)
    prefix = f"catalog.scale.sse.{label}"
    ctx.record(f"{prefix}.votes_accepted", result.accepted, "votes")
    ctx.record(f"{prefix}.events", seen.events, "events")
    ctx.record(f"{prefix}.behind_at_end", seen.behind_at_end, "clients")
    for name in roots:
        ctx.record(f"{prefix}.{name}_cpu_us_per_vote", 1e6 * (after[name].cpu_s - before[name].cpu_s) / accepted, "µs")


Latencies = Callable[[Context, str], Awaitable[None]]
"""Records ``catalog.scale.<label>.vote.*`` and ``.read.*`` (wrk on the hot comparison)."""


async def run_catalog_scale(ctx: Context, latencies: Latencies) -> None:
    config = ctx.config
    catalogs = ctx.shared.get("scale_catalogs")
    if not isinstance(catalogs, Catalogs):
        catalogs = make_catalogs(config.scale_tools, config.scale_comparisons, config.scale_sse_comparisons)
        ctx.shared["scale_catalogs"] = catalogs
    files = {}
    for label in ("demo", "small", "big"):
        files[label] = ctx.stack.work_dir / f"scale-{label}.json"
        files[label].write_bytes(encode_catalog(getattr(catalogs, label)))

    await load_file(ctx, files["demo"])
    await asyncio.to_thread(record_services, ctx, "demo")
    await latencies(ctx, "demo")

    await load_file(ctx, files["small"])
    await asyncio.to_thread(record_services, ctx, "small")
    await sse_run(ctx, catalogs, "small")

    big = catalogs.big
    seconds, out = await load_file(ctx, files["big"])
    ctx.record("catalog.scale.load_s", seconds, "s")
    small_ids = {c.id for c in catalogs.small.comparisons}
    added = next(c.id for c in reversed(big.comparisons) if c.id not in small_ids)
    ctx.record("catalog.scale.visible_s", await until_served(ctx, added), "s")
    ctx.note(f"catalog.scale: {out.strip().splitlines()[-1]}")
    trees = sample_trees({name: ctx.stack.service(name).process.pid for name in SERVICES})
    for name in SERVICES:
        ctx.record(f"catalog.scale.rss.{name}.running_big_mb", trees[name].rss_mb, "MiB")
    await asyncio.to_thread(record_services, ctx, "big")
    extra = (len(big.comparisons) - len(catalogs.small.comparisons)) / 1000
    for name in SERVICES:
        small = ctx.figures[f"catalog.scale.rss.{name}.small_mb"].values[-1]
        large = ctx.figures[f"catalog.scale.rss.{name}.big_mb"].values[-1]
        ctx.record(f"catalog.scale.rss.{name}.per_1000_comparisons_mb", (large - small) / extra, "MiB")
    await latencies(ctx, "big")
    await sse_run(ctx, catalogs, "big")

    # One tool's price changes: from the load's start, and from its end, until every service shows it.
    tool = big.tools[len(big.tools) // 2]
    comparison = next(c.id for c in big.comparisons if tool.id in c.tools)
    entry = "$19/mo"  # the big catalogue was just loaded again from its file: "Free" there
    changed = Catalog(
        tools=[msgspec.structs.replace(t, entry=entry) if t.id == tool.id else t for t in big.tools],
        comparisons=big.comparisons,
    )
    path = ctx.stack.work_dir / "scale-changed.json"
    path.write_bytes(encode_catalog(changed))
    started = time.perf_counter()
    seconds, _ = await load_file(ctx, path)
    after_load = await until_entry(ctx, tool.id, comparison, entry)
    ctx.record("catalog.scale.change.load_s", seconds, "s")
    ctx.record("catalog.scale.change.visible_after_load_s", after_load, "s")
    ctx.record("catalog.scale.change.visible_s", time.perf_counter() - started, "s")

    await load_file(ctx, files["demo"])
