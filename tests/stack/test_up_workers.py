"""``shipskip up --workers 2``: the whole stack with two granian workers behind each HTTP port, on the suite's servers.

Both workers of each service answer; every vote is counted, whichever worker took it; each read-API worker's
in-memory view serves the exact figures; each votes worker falls back to per-process limits while Redis is away and
shares them again after; SIGTERM or Ctrl-C (SIGINT to the process group, as a terminal sends it) stops everything.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.stack.servers import EmbeddedServers, ServerAddresses, free_port
from tests.faults.ingest import (
    LOAD_ENV,
    TOOLS,
    Ingest,
    Tallies,
    database_tallies,
    stream_event_ids,
    stream_last_seq,
)
from tests.support import flush_redis, projected_position, reset_servers, run_cli, wait_until

WORKERS = 2
LLAMA = next(iter(TOOLS))


def process_table() -> dict[int, tuple[int, str]]:
    """Every live process: pid -> (parent pid, start time), from /proc (the start time tells a reused pid apart)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z":  # a zombie has exited already
            table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """The live processes under ``pid``, with their start times."""
    table = process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


def still_running(processes: dict[int, str]) -> dict[int, str]:
    table = process_table()
    return {pid: started for pid, started in processes.items() if table.get(pid, (0, ""))[1] == started}


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class UpStack:
    process: subprocess.Popen[bytes]
    output: Path
    votes_port: int
    read_port: int
    env: dict[str, str]

    @property
    def votes_url(self) -> str:
        return f"http://127.0.0.1:{self.votes_port}"

    @property
    def read_url(self) -> str:
        return f"http://127.0.0.1:{self.read_port}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def worker_pids(self, url: str) -> set[int]:
        """The pids /healthz names, over new connections, until ``WORKERS`` of them were seen (at most 500 tries)."""
        seen: set[int] = set()
        for _ in range(500):
            seen.add(int(httpx.get(url + "/healthz", timeout=10).json()["pid"]))
            if len(seen) == WORKERS:
                break
        return seen


@contextmanager
def shipskip_up(servers: ServerAddresses, tmp_path: Path, **extra: str) -> Iterator[UpStack]:
    """``shipskip up --workers 2`` on the suite's servers and free ports; stopped (SIGKILL to its group) if the test
    did not stop it itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "GRANIAN_"))}
    votes_port, read_port = free_port(), free_port()
    env.update(
        {
            "SHIPSKIP_NATS_URL": servers.nats_url,
            "SHIPSKIP_DATABASE_URL": servers.database_url,
            "SHIPSKIP_REDIS_URL": servers.redis_url,
            "SHIPSKIP_VOTES_PORT": str(votes_port),
            "SHIPSKIP_TALLY_PORT": str(read_port),
            "SHIPSKIP_STACK_FILE": str(tmp_path / "stack.json"),
            "SHIPSKIP_PROJECTOR_PORT": "0",  # not 8082, which another stack on the machine may hold
            **LOAD_ENV,
            **extra,
        }
    )
    output = tmp_path / "up.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--workers", str(WORKERS), "--data", str(tmp_path / "data")],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    stack = UpStack(process, output, votes_port, read_port, env)
    try:
        wait_until(lambda: "shipskip is running" in stack.text() or process.poll() is not None, timeout=180)
        assert process.poll() is None, stack.text()
        assert f"({WORKERS} workers each)" in stack.text()
        yield stack
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stop_and_check_nothing_is_left(stack: UpStack, how: str) -> None:
    tree = descendants(stack.process.pid)
    if how == "SIGTERM":
        stack.process.send_signal(signal.SIGTERM)
    else:
        os.killpg(stack.process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    assert stack.process.wait(90) == 0, stack.text()
    assert "stopping" in stack.text()
    assert not still_running(tree), f"left running after {how}: {still_running(tree)}\n{stack.text()}"
    assert not port_open(stack.votes_port)
    assert not port_open(stack.read_port)
    assert not Path(stack.env["SHIPSKIP_STACK_FILE"]).exists()


def vote_through_each_worker(stack: UpStack, ingest: Ingest, verdicts: tuple[str, ...]) -> Counter[int]:
    """New voters vote, each over one connection whose worker /healthz names, until every votes worker took votes.

    Returns how many votes each worker took; the votes go into ``ingest``'s model for the exact check.
    """
    taken: Counter[int] = Counter()
    for attempt in range(300):
        with httpx.Client(timeout=15) as client:  # one connection: one worker answers all of these
            pid = int(client.get(stack.votes_url + "/healthz").json()["pid"])
            response = client.post(stack.votes_url + "/v1/voters")
            assert response.status_code == 201, response.text
            token = response.json()["voter_token"]
            tool = TOOLS[LLAMA][attempt % 2]
            for verdict in verdicts:
                answer = client.post(
                    f"{stack.votes_url}/v1/comparisons/{LLAMA}/votes",
                    json={"tool_id": tool, "verdict": verdict},
                    headers={"X-Voter-Token": token},
                )
                assert answer.status_code == 202, answer.text
                ingest.record(LLAMA, tool, token, verdict, answer.json()["event_id"])
                taken[pid] += 1
        if len(taken) == WORKERS and attempt >= 10:
            break
    return taken


def figures_of_each_worker(read_url: str) -> dict[int, Tallies]:
    """(ship, skip) per tool as each read-API worker serves them from its own view (seen over new connections)."""
    seen: dict[int, Tallies] = {}
    query = "&".join(f"comparison_id={c}" for c in TOOLS)
    for _ in range(500):
        with httpx.Client(timeout=10) as client:
            pid = int(client.get(read_url + "/healthz").json()["pid"])
            response = client.get(f"{read_url}/v1/community?{query}")
            assert response.status_code == 200, response.text
        seen[pid] = {
            (c["comparison_id"], t["tool_id"]): (t["ship"], t["skip"])
            for c in response.json()["comparisons"]
            for t in c["tools"]
        }
        if len(seen) == WORKERS:
            break
    return seen


def assert_every_vote_counted_by_every_worker(stack: UpStack, servers: ServerAddresses, ingest: Ingest) -> None:
    ids = asyncio.run(stream_event_ids(servers))
    assert Counter(ids) == Counter(ingest.outcomes.accepted), "the stream's events are not the ones answered 202"
    last = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == last, timeout=60)
    expected = ingest.expected_tallies()
    tallies, uncounted = asyncio.run(database_tallies(servers))
    assert (tallies, uncounted) == (expected, 0)

    # Every read worker's own view, fed by the change notices, serves exactly these figures.
    def every_worker_serves_them() -> bool:
        seen = figures_of_each_worker(stack.read_url)
        assert len(seen) == WORKERS, seen
        return all(figures == expected for figures in seen.values())

    wait_until(every_worker_serves_them, timeout=30)
    verified = run_cli(stack.env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"verified up to stream position {last}: 0 differences" in verified.stdout, verified.stdout


def test_up_with_two_workers_each_answers_counts_every_vote_and_stops_on_sigterm(
    servers: ServerAddresses, tmp_path: Path
) -> None:
    asyncio.run(reset_servers(servers))
    with shipskip_up(servers, tmp_path) as stack:
        tree = descendants(stack.process.pid)
        for url in (stack.votes_url, stack.read_url):
            workers = stack.worker_pids(url)
            assert len(workers) == WORKERS, workers
            assert workers <= set(tree), (workers, tree)

        ingest = Ingest(lambda: stack.votes_url, workers=6).start()
        try:
            taken = vote_through_each_worker(stack, ingest, ("ship", "skip"))
            ingest.wait_for_votes(300)
        finally:
            ingest.stop()
        assert len(taken) == WORKERS, taken
        assert set(ingest.outcomes.statuses) <= {200, 202}, ingest.outcomes.statuses
        assert_every_vote_counted_by_every_worker(stack, servers, ingest)
        stop_and_check_nothing_is_left(stack, "SIGTERM")


def every_worker_says(votes_url: str, limits: str) -> bool:
    """Whether each votes worker's /healthz says its limits are ``limits`` ("shared" or "per-process")."""
    seen: dict[int, str] = {}
    for _ in range(500):
        body = httpx.get(votes_url + "/healthz", timeout=10).json()
        seen[int(body["pid"])] = body["limits"]
        if len(seen) == WORKERS:
            break
    assert len(seen) == WORKERS, seen
    return set(seen.values()) == {limits}


def test_up_with_two_workers_each_falls_back_without_redis_and_shares_again_then_stops_on_ctrl_c(
    servers: ServerAddresses, embedded: EmbeddedServers | None, tmp_path: Path
) -> None:
    if embedded is None:
        pytest.skip("stopping Redis needs the embedded servers")
    asyncio.run(reset_servers(servers))
    asyncio.run(flush_redis(servers))
    limits = {  # on, so every vote goes through Redis (or each worker's own counters), none binding
        "SHIPSKIP_RATE_LIMITS": "on",
        "SHIPSKIP_LIMIT_VOTES_PER_VOTER": "100000/1s,100000",
        "SHIPSKIP_LIMIT_VOTES_PER_ADDRESS": "100000/1s,100000",
        "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS": "100000/1s,100000",
        "SHIPSKIP_LIMIT_VOTES_PER_COMPARISON": "100000/1s,100000",
    }
    with shipskip_up(servers, tmp_path, **limits) as stack:
        ingest = Ingest(lambda: stack.votes_url, workers=2, voters_per_worker=5)  # the model only
        assert every_worker_says(stack.votes_url, "shared")
        try:
            embedded.stop_server("redis")
            # Each worker finds Redis gone on its own first vote, and goes on taking votes with limits of its own.
            taken = vote_through_each_worker(stack, ingest, ("ship",))
            assert len(taken) == WORKERS, taken
            wait_until(lambda: every_worker_says(stack.votes_url, "per-process"), timeout=30)
        finally:
            embedded.start_server("redis")
        # Each worker's own watcher sees Redis back.
        wait_until(lambda: every_worker_says(stack.votes_url, "shared"), timeout=30)
        taken = vote_through_each_worker(stack, ingest, ("skip",))
        assert len(taken) == WORKERS, taken
        assert_every_vote_counted_by_every_worker(stack, servers, ingest)
        stop_and_check_nothing_is_left(stack, "Ctrl-C")
