"""The soak: ``soak_s`` (10 minutes) of steady mixed voting and reading with ``soak_sse_clients`` (500) open SSE
streams, then the exact check of the tallies against the accepted votes.

Three load processes, each its own, so that none starves another and their CPU is measured apart:
- ``bench.soak_votes``: paced voters casting, changing, retracting and repeating votes, recording every answer;
- ``bench.pyload``: paced GETs of the community figures (each comparison's, and all of them in one request);
- ``bench.soak_sse``: the live pages, each holding a stream of one comparison.
The votes go to comparisons added to the catalogue for the soak (``soak-1`` …), which nothing else votes on, so
the generator's own record is the whole truth about them. Meanwhile ``PipelineMonitor.watch`` samples the
projector's lag and the memory and CPU of every process tree (the services, the servers, the generators).
"""

import asyncio
import itertools
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

import httpx
import msgspec
import nats

from bench.load import LoadResult, LoadSpec
from bench.procs import machine
from bench.registry import Context
from bench.soak_check import check_exact, served_tallies
from bench.soak_report import SoakReport, errors_by_kind, memory_rows
from bench.soak_sse import SseSoakResult, SseSoakSpec
from bench.soak_votes import SoakComparison, VoteSoakResult, VoteSoakSpec, bucket_count
from bench.stack import TOKEN_KEY, TOKEN_TTL_S
from contracts.catalog import Catalog, Comparison
from services.shared.catalog_store import read_catalog, write_catalog
from services.votes.identity import VoterTokens

SERVICES = ("votes", "read", "projector", "nats", "postgres", "redis")
GENERATORS = {"votes": "load: votes", "reads": "load: reads", "sse": "load: SSE"}
VOTE_CONNECTIONS = 32
READ_CONNECTIONS = 16


def soak_comparisons(catalog: Catalog, count: int) -> list[Comparison]:
    """``count`` comparisons of the catalogue's tools, two by two, named ``soak-1`` …"""
    pairs = list(itertools.combinations([tool.id for tool in catalog.tools], 2))
    found = []
    for i in range(count):
        left, right = pairs[i % len(pairs)]
        found.append(Comparison(id=f"soak-{i + 1}", title=f"Soak {i + 1}: {left} vs {right}", tools=[left, right]))
    return found


async def add_to_catalogue(nats_url: str, comparisons: list[Comparison]) -> None:
    """Put the soak's comparisons into the live catalogue (the services watch it), keeping all it holds."""
    nc = await nats.connect(nats_url, name="shipskip-bench-soak")
    try:
        js = nc.jetstream()
        current, _ = await read_catalog(js)
        assert current is not None, "the stack was bootstrapped with a catalogue"
        known = {c.id for c in current.comparisons}
        added = [c for c in comparisons if c.id not in known]
        if added:
            await write_catalog(js, Catalog(tools=current.tools, comparisons=[*current.comparisons, *added]))
    finally:
        await nc.close()


async def wait_known(votes_url: str, read_url: str, comparison_ids: list[str], token: str, timeout_s: float) -> None:
    """Until both APIs know every soak comparison. The votes API is asked with an empty body: 422 once it knows
    the comparison (404 before), and nothing is written either way."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        for comparison_id in comparison_ids:
            while True:
                read = await client.get(f"{read_url}/v1/comparisons/{comparison_id}/community")
                vote = await client.post(
                    f"{votes_url}/v1/comparisons/{comparison_id}/votes",
                    content=b"{}",
                    headers={"X-Voter-Token": token, "Content-Type": "application/json"},
                )
                if read.status_code == 200 and vote.status_code == 422:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{comparison_id}: read API {read.status_code}, votes API {vote.status_code}")
                await asyncio.sleep(0.1)


class Child:
    """A load process of the soak: its spec as the first argument, JSON lines on stdout, stderr into a log."""

    def __init__(self, process: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.process = process
        self._log = log

    @classmethod
    async def start(cls, module: str, spec: msgspec.Struct, log_path: Path, *, talk: bool = False) -> "Child":
        log = log_path.open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            msgspec.json.encode(spec).decode(),
            stdin=asyncio.subprocess.PIPE if talk else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, message: Mapping[str, object]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(msgspec.json.encode(message) + b"\n")
        await self.process.stdin.drain()

    async def line(self, timeout_s: float) -> bytes:
        """The next line it prints (of JSON); fails when it exits first."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            code = await self.process.wait()
            raise RuntimeError(f"{self.name} exited with {code} before answering (its log: {self._log.name})")
        return line

    async def last_line(self, timeout_s: float) -> bytes:
        """Wait for it to exit; its last line."""
        assert self.process.stdout is not None
        out = await asyncio.wait_for(self.process.stdout.read(), timeout_s)
        code = await self.process.wait()
        lines = out.strip().splitlines()
        if code != 0 or not lines:
            raise RuntimeError(f"{self.name} exited with {code} (its log: {self._log.name})")
        return lines[-1]

    @property
    def name(self) -> str:
        return Path(self._log.name).stem

    def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        self._log.close()


def write_tokens(path: Path, count: int) -> list[str]:
    """Voter tokens as POST /v1/voters issues them (same keys, same code), new ones: nobody else's ballots."""
    tokens = VoterTokens([TOKEN_KEY.encode()], TOKEN_TTL_S)
    issued = [tokens.issue() for _ in range(count)]
    path.write_text("\n".join(issued) + "\n")
    return issued


def bucket_width(duration_s: float) -> float:
    """Minutes for a long soak; a sixth of a short one, so that its tables still show a course."""
    return 60.0 if duration_s >= 180 else duration_s / 6


async def run_soak(ctx: Context) -> SoakReport:
    config, stack = ctx.config, ctx.stack
    votes_port, read_port = stack.service("votes").port, stack.service("read").port
    assert votes_port is not None
    assert read_port is not None
    votes_url, read_url = f"http://127.0.0.1:{votes_port}", f"http://127.0.0.1:{read_port}"
    facts = machine()
    comparisons = soak_comparisons(stack.catalog, config.soak_comparisons)
    ids = [c.id for c in comparisons]
    tools = {c.id: (c.tools[0], c.tools[1]) for c in comparisons}
    tokens_file, accepted_file = stack.work_dir / "soak-tokens.txt", stack.work_dir / "soak-accepted.txt"
    tokens = write_tokens(tokens_file, config.soak_voter_tokens)
    await add_to_catalogue(stack.addresses.nats_url, comparisons)
    await wait_known(votes_url, read_url, ids, tokens[0], timeout_s=30.0)
    await ctx.monitor.wait_caught_up(config.drain_timeout_s)

    bucket_s = bucket_width(config.soak_s)
    buckets = bucket_count(config.soak_s, bucket_s)
    logs = stack.log_dir
    children: dict[str, Child] = {}
    stop_watch: Callable[[], asyncio.Task[None]] | None = None
    try:
        sse_spec = SseSoakSpec(read_port, config.soak_sse_clients, ids, bucket_s, buckets)
        children["sse"] = sse = await Child.start("bench.soak_sse", sse_spec, logs / "soak-sse.log", talk=True)
        ready = msgspec.json.decode(await sse.line(sse_spec.connect_timeout_s + 30), type=dict[str, int])
        if ready.get("ready", 0) < config.soak_sse_clients:
            ctx.note(f"soak: only {ready.get('ready')} of {config.soak_sse_clients} SSE clients connected")

        def roots() -> dict[str, int]:
            found = stack.process_roots()
            found.update({GENERATORS[name]: child.pid for name, child in children.items()})
            return found

        watch, stop_watch = ctx.monitor.watch(roots, interval_s=0.5, trees_every=2)
        await sse.send({"start": True})
        vote_spec = VoteSoakSpec(
            port=votes_port,
            rate=config.soak_vote_rate,
            connections=VOTE_CONNECTIONS,
            duration_s=config.soak_s,
            tokens_file=str(tokens_file),
            comparisons=[SoakComparison(c, tools[c]) for c in ids],
            accepted_file=str(accepted_file),
            bucket_s=bucket_s,
        )
        every = "/v1/community?" + "&".join(f"comparison_id={c}" for c in ids)
        read_paths = (*(f"/v1/comparisons/{c}/community" for c in ids), every)
        read_spec = LoadSpec(
            port=read_port,
            connections=READ_CONNECTIONS,
            duration_s=config.soak_s,
            paths=read_paths,
            rate=config.soak_read_rate,
        )
        children["votes"] = await Child.start("bench.soak_votes", vote_spec, logs / "soak-votes.log")
        children["reads"] = await Child.start("bench.pyload", read_spec, logs / "soak-reads.log")
        bound = config.soak_s + 180.0  # the votes in hand may be retried for up to 100 s after the end
        vote_line, read_line = await asyncio.gather(
            children["votes"].last_line(bound), children["reads"].last_line(bound)
        )
        await sse.send({"drain": True})
        await stop_watch()
        votes = msgspec.json.decode(vote_line, type=VoteSoakResult)
        reads = msgspec.json.decode(read_line, type=LoadResult)
        drained = await ctx.monitor.wait_caught_up(config.drain_timeout_s)
        if drained is None:
            ctx.note(f"soak: the projector had not caught up {config.drain_timeout_s:.0f} s after the load")
        exactness = await check_exact(
            nats_url=stack.addresses.nats_url,
            database_url=stack.addresses.database_url,
            read_url=read_url,
            comparisons=tools,
            ballots_per_client_day=int(stack.env["SHIPSKIP_BALLOTS_PER_CLIENT_DAY"]),
            generator=votes.expected,
            accepted_file=accepted_file,
            unknown_votes=votes.unknown,
        )
        _, positions = await served_tallies(read_url, ids)
        await sse.send({"final": positions})
        sse_result = msgspec.json.decode(await sse.last_line(sse_spec.final_timeout_s + 30), type=SseSoakResult)
    finally:
        if stop_watch is not None:
            await stop_watch()
        for child in children.values():
            child.stop()

    wrong = [f for f in sse_result.last_figures if exactness.fold.get(f.comparison_id) != f.tools]
    notes = []
    if wrong:
        notes.append(
            f"{sum(f.clients for f in wrong)} SSE clients ended on figures other than the fold's: "
            + "; ".join(f"{f.clients} on {f.comparison_id} at {f.position}" for f in wrong[:5])
        )
    sse_on_final = sse_result.clients - sum(f.clients for f in wrong)
    load = (watch.started, watch.stopped)
    names = [*SERVICES, *(GENERATORS[name] for name in ("votes", "reads", "sse"))]
    report = SoakReport(
        command="",
        mode="quick" if config.quick else "full",
        machine=facts,
        settings={
            "seconds": config.soak_s,
            "vote_rate": config.soak_vote_rate,
            "read_rate": config.soak_read_rate,
            "sse_clients": config.soak_sse_clients,
            "voters": config.soak_voter_tokens,
            "comparisons": config.soak_comparisons,
        },
        duration_s=load[1] - load[0],
        bucket_s=bucket_s,
        memory=memory_rows(watch, SERVICES, bucket_s, buckets),
        cpu={name: round(watch.cpu_share(name), 3) for name in names if watch.cpu_share(name)},
        projector_max_lag_s=max(watch.lags(), default=0.0),
        drain_s=drained if drained is not None else config.drain_timeout_s,
        votes=votes,
        reads=reads,
        sse=sse_result,
        exactness=exactness,
        errors=errors_by_kind(votes, reads, sse_result),
        sse_on_final=sse_on_final,
        notes=notes,
    )
    record(ctx, report)
    return report


def record(ctx: Context, report: SoakReport) -> None:
    """The soak's headline figures, into the bench's figures (``soak.*``)."""
    votes, sse = report.votes, report.sse
    ctx.record("soak.exact", 1.0 if report.exactness.exact else 0.0, "yes=1")
    ctx.record("soak.sse_clients_on_final_figures", report.sse_on_final, "clients")
    ctx.record("soak.votes_accepted", votes.accepted, "votes")
    ctx.record("soak.votes_per_s", votes.votes / votes.duration_s if votes.duration_s else 0.0, "votes/s")
    ctx.record("soak.votes_p99_ms", votes.p99_ms, "ms")
    ctx.record("soak.reads_per_s", report.reads.rate(), "req/s")
    ctx.record("soak.reads_p99_ms", report.reads.p99_ms, "ms")
    ctx.record("soak.errors", sum(report.errors.values()), "errors")
    ctx.record("soak.sse_clients_connected", sse.connected_at_start, "clients")
    ctx.record("soak.sse_events", sse.events, "events")
    ctx.record("soak.sse_longest_silence_s", sse.longest_silence_s, "s")
    ctx.record("soak.projector_max_lag_s", report.projector_max_lag_s, "s")
    for row in report.memory:
        ctx.record(f"soak.{row.name}.rss_max_mb", row.high, "MiB")
        ctx.record(f"soak.{row.name}.growth_after_warmup_mb", row.end - row.after_warmup, "MiB")
    for name, share in report.cpu.items():
        ctx.record(f"soak.cpu.{name.replace('load: ', 'generator.').lower()}", share, "cores")
    ctx.shared["soak"] = report
    verdict = "exact" if report.exactness.exact else "NOT exact"
    ctx.note(
        f"soak: {report.duration_s / 60:.1f} min, {votes.accepted:,} votes accepted, "
        f"{sum(report.errors.values())} errors, tallies {verdict}; details in bench/results/soak.md"
    )
