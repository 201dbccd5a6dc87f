"""``python -m bench``: start the stack, run the registered benchmarks, write and print the results.

    python -m bench                  # everything (about 15 minutes); BENCH_QUICK=1 for a few seconds each
    python -m bench --doc docs/performance.md   # also put the tables into that page (as `make bench` does)
    BENCH_ONLY=ingest,read python -m bench
    python -m bench --only ingest        # ingest and the baselines it is compared with (bare and plain POST)
    python -m bench --only soak --soak-seconds 120   # the soak alone (10 minutes by default): soak.json, soak.md
    BENCH_NATS_SYNC=always python -m bench --only ingest   # nats-server syncing every write before its ack

Exits 1 when a benchmark failed to run, or when the soak's tallies are not exactly the accepted votes; a speed
target that is not met is a finding, not a failure.
"""

import argparse
import asyncio
import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path

import bench.benchmarks  # noqa: F401  (registers the benchmarks)
from bench.config import BenchConfig
from bench.load import generator_name
from bench.monitor import PipelineMonitor
from bench.procs import machine
from bench.registry import Context, schedule, selected, with_baselines
from bench.report import Report, evaluate, markdown, summarise, update_section, write
from bench.soak_report import SOAK_BEGIN, SOAK_END, SoakReport
from bench.soak_report import markdown as soak_markdown
from bench.soak_report import write as write_soak
from bench.stack import BenchStack
from infra.stack.servers import ServerAddresses


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _run_all(ctx: Context, failures: list[str]) -> None:
    await ctx.monitor.open()
    try:
        order = schedule(selected(ctx.config), ctx.config)
        broken: set[str] = set()
        for number, (item, run) in enumerate(order, 1):
            if item.name in broken:
                continue
            log(f"({number}/{len(order)}) {item.name} run {run + 1}: {item.doc}")
            started = time.perf_counter()
            try:
                await item.run(ctx)
            except Exception as exc:
                broken.add(item.name)
                failures.append(f"{item.name}: {type(exc).__name__}: {str(exc)[:500]}")
                log(f"{item.name} failed:\n{traceback.format_exc()}\n{ctx.stack.log_tails()}")
            else:
                log(f"    done in {time.perf_counter() - started:.1f}s")
    finally:
        await ctx.monitor.close()


def run_harness(
    config: BenchConfig,
    servers: ServerAddresses | None = None,
    command: str = "python -m bench",
    doc: Path | None = None,
) -> Report:
    """Start everything, run the benchmarks, stop everything; write latest.json and latest.md (unless the soak
    ran alone), and soak.json and soak.md when the soak ran; and put them between their markers in ``doc``."""
    started = time.perf_counter()
    facts = machine()
    stack = BenchStack.create(servers, nats_sync=config.nats_sync)
    failures: list[str] = []
    ctx: Context | None = None
    try:
        log(f"starting the stack in {stack.work_dir} ({'given' if servers else 'embedded'} servers)")
        stack.start()
        ctx = Context(config, stack, PipelineMonitor(stack.addresses.nats_url, stack.addresses.database_url))
        if config.nats_sync and servers is not None:
            ctx.notes.append(f"BENCH_NATS_SYNC={config.nats_sync} not applied: the servers were given, not started")
        asyncio.run(_run_all(ctx, failures))
    finally:
        stack.stop(keep_logs_in=config.results_dir / "logs")
    load = os.getloadavg()
    facts["load_average_at_end"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    settings = {f.name: str(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name != "results_dir"}
    settings["generator"] = generator_name(config.generator)
    soak = ctx.shared.get("soak") if ctx else None
    if isinstance(soak, SoakReport):
        soak.command = command
        soak.machine["load_average_at_end"] = facts["load_average_at_end"]
    report = Report(
        command=command,
        mode="quick" if config.quick else "full",
        machine=facts,
        config=settings,
        duration_s=time.perf_counter() - started,
        checks=evaluate(ctx.figures if ctx else {}),
        figures=summarise(ctx.figures if ctx else {}),
        notes=ctx.notes if ctx else [],
        failures=failures,
        soak=soak if isinstance(soak, SoakReport) else None,
    )
    if not soak_alone(config):
        json_path, md_path = write(report, config.results_dir)
        log(f"wrote {json_path} and {md_path}")
        if doc is not None and not config.quick:
            if update_section(doc, markdown(report)):
                log(f"updated the benchmark table in {doc}")
            else:
                log(f"{doc} has no bench markers; left as it is")
    if report.soak is not None:
        json_path, md_path = write_soak(report.soak, config.results_dir)
        log(f"wrote {json_path} and {md_path}")
        if doc is not None and not config.quick:
            if update_section(doc, soak_markdown(report.soak), SOAK_BEGIN, SOAK_END):
                log(f"updated the soak results in {doc}")
            else:
                log(f"{doc} has no soak markers; left as it is")
    return report


def soak_alone(config: BenchConfig) -> bool:
    """Only the soak was chosen: the other benchmarks' results (latest.*, their table) are left as they are."""
    return {b.name for b in selected(config)} == {"soak"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--doc",
        type=Path,
        help="put the results between their markers in this Markdown file (make bench: docs/performance.md)",
    )
    parser.add_argument("--command", default="make bench", help="how this run was started, for the report")
    parser.add_argument(
        "--only",
        help="comma-separated benchmark name prefixes (like BENCH_ONLY); the baselines a chosen benchmark is "
        "compared with run too",
    )
    parser.add_argument("--soak-seconds", type=float, help="length of the soak's load (BENCH_SOAK_S; 600)")
    args = parser.parse_args(argv)
    config = BenchConfig.from_env()
    if args.only:
        config = dataclasses.replace(config, only=with_baselines(args.only.split(",")))
    if args.soak_seconds is not None:
        config = dataclasses.replace(config, soak_s=args.soak_seconds)
    report = run_harness(config, command=args.command, doc=args.doc)
    if not soak_alone(config):
        print(markdown(report))
    if report.soak is not None:
        print(soak_markdown(report.soak))
    for failure in report.failures if soak_alone(config) else ():
        print(f"failed: {failure}")
    for note in report.notes:
        if note.startswith("  ") or note.startswith("profile"):
            print(note)
    if report.soak is not None and not report.soak.passed:
        print("soak: the tallies or the live figures did not match the accepted votes (see above)")
        return 1
    return 1 if report.failures else 0
