"""Operators: rebuild with no downtime, verify, per-comparison rebuild, interrupted rebuild, void, dead letters.

The stream here is written directly (as many votes services would), so it can hold 100,000 events quickly.
"""

import asyncio
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from contracts.events import VoteCast, VoteEvent, VoteRetracted, encode_event
from contracts.subjects import votes_subject
from infra.stack.servers import ServerAddresses
from tests.support import (
    Pipeline,
    execute,
    projected_position,
    publish_raw,
    run_cli,
    run_cli_meanwhile,
    stream_last_seq,
    wait_until,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
TOOLS = {LLAMA: ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1"), SMOL: ("smolvlm2-2b", "windsurf-swe-1")}
START = datetime(2026, 11, 23, tzinfo=UTC)

Tallies = dict[tuple[str, str], tuple[int, int]]


def synthetic_stream(count: int, seed: int) -> tuple[list[VoteEvent], dict[tuple[str, str, str], str | None]]:
    """Casts, changes, retractions and repeated events from 2,000 voters; and the ballots they leave."""
    rng = random.Random(seed)
    voters = [f"{i:032x}" for i in range(2000)]
    events: list[VoteEvent] = []
    ballots: dict[tuple[str, str, str], str | None] = {}
    for i in range(count):
        if events and rng.random() < 0.05:
            event: VoteEvent = rng.choice(events[-500:])  # the same event stored again (a retry outside the window)
        else:
            comparison = rng.choice(list(TOOLS))
            tool = rng.choice(TOOLS[comparison])
            voter = rng.choice(voters)
            at = START + timedelta(milliseconds=i)
            if rng.random() < 0.15:
                event = VoteRetracted(f"r{i}", comparison, tool, voter, at)
            else:
                event = VoteCast(f"c{i}", comparison, tool, rng.choice(["ship", "skip"]), voter, at)
        events.append(event)
        key = (event.comparison_id, event.tool_id, event.voter_id)
        ballots[key] = event.verdict if isinstance(event, VoteCast) else None
    return events, ballots


def tallies_of(ballots: dict[tuple[str, str, str], str | None]) -> Tallies:
    counts = {(c, t): [0, 0] for c, tools in TOOLS.items() for t in tools}
    for (comparison, tool, _), verdict in ballots.items():
        if verdict is not None:
            counts[(comparison, tool)][0 if verdict == "ship" else 1] += 1
    return {key: (ship, skip) for key, (ship, skip) in counts.items()}


def served_tallies(read_url: str) -> Tallies:
    query = "&".join(f"comparison_id={c}" for c in TOOLS)
    response = httpx.get(f"{read_url}/v1/community?{query}", timeout=5)
    assert response.status_code == 200, response.text
    body = response.json()
    return {(c["comparison_id"], t["tool_id"]): (t["ship"], t["skip"]) for c in body["comparisons"] for t in c["tools"]}


async def live_tallies(servers: ServerAddresses) -> Tallies:
    conn = await asyncpg.connect(servers.database_url)
    try:
        rows = await conn.fetch("select comparison_id, tool_id, ship, skip from tallies")
    finally:
        await conn.close()
    counts = {(c, t): (0, 0) for c, tools in TOOLS.items() for t in tools}
    counts.update({(r["comparison_id"], r["tool_id"]): (r["ship"], r["skip"]) for r in rows})
    return counts


async def rebuild_running(servers: ServerAddresses) -> bool:
    conn = await asyncpg.connect(servers.database_url)
    try:
        return bool(await conn.fetchval("select exists (select 1 from rebuild_runs where state = 'running')"))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def loaded(pipeline: Pipeline, servers: ServerAddresses) -> Tallies:
    """100,000 events in the stream, folded by the live projector; the tallies they must give."""
    events, ballots = synthetic_stream(100_000, seed=5)
    asyncio.run(publish_raw(servers, [(votes_subject(e.comparison_id), encode_event(e)) for e in events]))
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head, timeout=180, interval=0.5)
    expected = tallies_of(ballots)
    assert asyncio.run(live_tallies(servers)) == expected
    return expected


def test_rebuild_gives_the_live_tallies_while_reads_keep_answering(
    pipeline: Pipeline, servers: ServerAddresses, loaded: Tallies
) -> None:
    wait_until(lambda: served_tallies(pipeline.read_url) == loaded, timeout=10)
    problems: list[str] = []
    reads = 0

    def keep_reading(ended: threading.Event) -> None:
        nonlocal reads
        while not ended.is_set():
            try:
                figures = served_tallies(pipeline.read_url)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                problems.append(repr(exc))
                continue
            if figures != loaded:
                problems.append(f"reads changed during the rebuild: {figures}")
            reads += 1

    result = run_cli_meanwhile(pipeline.env, keep_reading, "rebuild")
    assert result.returncode == 0, result.stderr
    assert "rebuilt" in result.stdout
    assert problems == []
    assert reads > 0
    assert asyncio.run(live_tallies(servers)) == loaded
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 differences" in verified.stdout


def test_verify_catches_a_hand_edit_and_a_comparison_rebuild_mends_only_that_comparison(
    pipeline: Pipeline, servers: ServerAddresses, loaded: Tallies
) -> None:
    llama_tool, smol_tool = TOOLS[LLAMA][0], TOOLS[SMOL][0]
    asyncio.run(
        execute(servers, "update tallies set ship = ship + 7 where tool_id = any($1::text[])", [llama_tool, smol_tool])
    )
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 1
    assert f"{LLAMA} / {llama_tool}" in verified.stdout
    assert f"{SMOL} / {smol_tool}" in verified.stdout

    rebuilt = run_cli(pipeline.env, "rebuild", "--comparison", LLAMA)
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = asyncio.run(live_tallies(servers))
    assert after[(LLAMA, llama_tool)] == loaded[(LLAMA, llama_tool)]
    ship, skip = loaded[(SMOL, smol_tool)]
    assert after[(SMOL, smol_tool)] == (ship + 7, skip), "the other comparison was touched"
    assert run_cli(pipeline.env, "verify", "--comparison", LLAMA).returncode == 0
    assert run_cli(pipeline.env, "verify", "--comparison", SMOL).returncode == 1

    assert run_cli(pipeline.env, "rebuild").returncode == 0
    assert asyncio.run(live_tallies(servers)) == loaded


def test_verify_catches_a_hand_edit_of_the_history_and_a_comparison_rebuild_mends_it(
    pipeline: Pipeline, servers: ServerAddresses, loaded: Tallies
) -> None:
    llama_tool = TOOLS[LLAMA][0]
    asyncio.run(
        execute(
            servers,
            "update tally_history set skip = skip + 3 where comparison_id = $1 and tool_id = $2"
            " and minute = (select min(minute) from tally_history where comparison_id = $1 and tool_id = $2)",
            LLAMA,
            llama_tool,
        )
    )
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert f"history {LLAMA} / {llama_tool} minute " in verified.stdout
    assert "1 difference" in verified.stdout

    rebuilt = run_cli(pipeline.env, "rebuild", "--comparison", LLAMA)
    assert rebuilt.returncode == 0, rebuilt.stderr
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_an_interrupted_rebuild_leaves_the_live_tables_and_a_second_run_succeeds(
    pipeline: Pipeline, servers: ServerAddresses, loaded: Tallies
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "rebuild"],
        env={**os.environ, **pipeline.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    # Killed once it reports events replayed: in the middle of the fold, before the swap. (Its row in rebuild_runs
    # is written at most once a second, and the whole rebuild of this stream can take less than that.)
    try:
        assert _progress_shown(process.stderr.fileno(), timeout_s=60), "the rebuild showed no progress"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "the rebuild had finished before it was killed"
    assert asyncio.run(live_tallies(servers)) == loaded
    status = run_cli(pipeline.env, "status")
    assert status.returncode == 0
    assert "rebuild in progress  no" in status.stdout

    assert run_cli(pipeline.env, "rebuild").returncode == 0
    assert asyncio.run(live_tallies(servers)) == loaded


def _progress_shown(fd: int, timeout_s: float) -> bool:
    """Read the rebuild's progress bar ("rebuild [#..] 13205/100000 events ...") until it counts some events."""
    deadline = time.monotonic() + timeout_s
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return False  # it exited
        seen = (seen + chunk)[-4096:]
        if any(int(done) > 0 for done in re.findall(rb"(\d+)/\d+ events", seen)):
            return True
    return False


def test_a_second_rebuild_at_once_is_refused(pipeline: Pipeline, servers: ServerAddresses, loaded: Tallies) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "rebuild"],
        env={**os.environ, **pipeline.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # The first one holds the lock once it has recorded its run.
        wait_until(lambda: asyncio.run(rebuild_running(servers)), timeout=60, interval=0.02)
        second = run_cli(pipeline.env, "rebuild")
        assert first.poll() is None, "the first rebuild ended before a second one was tried; use a longer stream"
        assert second.returncode == 1
        assert "already running" in second.stderr
    finally:
        assert first.wait(120) == 0
    assert asyncio.run(live_tallies(servers)) == loaded


def test_status_reports_head_position_and_counts(pipeline: Pipeline, loaded: Tallies) -> None:
    result = run_cli(pipeline.env, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["stream_head"] == status["projector_position"] >= 100_000
    assert status["lag_events"] == 0
    assert status["ballots"] == sum(ship + skip for ship, skip in loaded.values())
    assert status["rebuild_running"] is False
