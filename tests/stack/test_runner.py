"""``shipskip run`` (``make run``) as a process manager, through real processes: its own embedded servers, services,
and SIGKILLs.

A crashed process (projector, a votes worker, nats-server) is restarted and votes are still counted; a killed runner
takes every process of its stack with it, and the next one starts on the same data (also with its output closed,
as under `make run | head`); a second runner on the same data exits at once naming the first, which
goes on untouched; no secret is in the stack file anyone can read; `shipskip rebuild --partitions 2` under the
runner leaves it serving with two projectors, and the next run starts them too; a crash loop stops the stack with
the failing service's log; `shipskip ... | head` ends quietly.
"""

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack.stack_lock import LOCK_NAME, StackBusy, StackLock, processes_holding
from tests.stack.runner import (
    Runner,
    ballots_counted,
    cast_vote,
    launch,
    new_data_folder,
    remove_data_folder,
    runner_env,
    running,
)
from tests.stack.test_up_workers import port_open, still_running
from tests.support import run_cli, wait_until


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    with running(tmp_path_factory.mktemp("runner")) as runner:
        yield runner


def test_killed_processes_are_restarted_with_a_line_each_and_votes_are_still_counted(runner: Runner) -> None:
    cast_vote(runner.votes_url)
    wait_until(lambda: ballots_counted(runner) == 1, timeout=30)
    [projector] = runner.projector_pids()
    votes_main = runner.granian_main(runner.votes_port)
    [votes_worker] = [pid for pid in runner.pids(f"--port {runner.votes_port} ") if pid != votes_main]
    [nats] = runner.pids("nats-server")
    killed = {pid: runner.tree()[pid] for pid in (projector, votes_worker, nats)}
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        out = runner.output()
        return all(
            line in out
            for line in (
                "shipskip: projector killed by SIGKILL after",
                # granian's main process exits when one of its workers dies
                "shipskip: votes exited with status 1 after",
                "shipskip: nats-server killed by SIGKILL after",
            )
        )

    wait_until(restarted, timeout=30)
    assert "restarting it in 0.5 s" in runner.output()
    assert not still_running(killed)
    wait_until(lambda: len(runner.projector_pids()) == 1 and len(runner.pids("nats-server")) == 1, timeout=30)
    assert runner.projector_pids() != [projector]
    cast_vote(runner.votes_url)
    wait_until(lambda: ballots_counted(runner) == 2, timeout=60)
    assert runner.process.poll() is None


def test_a_second_runner_on_the_same_data_exits_at_once_naming_the_first_and_touches_nothing(
    runner: Runner, tmp_path: Path
) -> None:
    before = runner.stack_file.read_bytes()
    tree = runner.tree()
    env, _, _ = runner_env(tmp_path, SHIPSKIP_STACK_FILE=str(runner.stack_file))
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "services.cli", "run", "--data", str(runner.data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1, second.stdout + second.stderr
    assert time.monotonic() - started < 10
    assert second.stdout == ""
    lines = second.stderr.splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith("shipskip: a stack is already running on this data folder: ")
    for part in (f"runner pid {runner.process.pid}", runner.votes_url, f":{runner.read_port}", str(runner.data)):
        assert part in lines[0]
    assert runner.stack_file.read_bytes() == before
    assert runner.process.poll() is None
    assert still_running(tree) == tree
    assert ballots_counted(runner) >= 0  # the CLI still finds the stack


def test_the_stack_file_holds_no_secret_and_the_cli_reads_them_from_a_private_file(runner: Runner) -> None:
    generated = json.loads((runner.data / "secrets.json").read_text())
    stack_text = runner.stack_file.read_text()
    for name, value in generated.items():
        assert value not in stack_text, name
    stack = json.loads(stack_text)
    assert set(stack["env"]) == {
        "SHIPSKIP_NATS_URL",
        "SHIPSKIP_DATABASE_URL",
        "SHIPSKIP_REDIS_URL",
        "SHIPSKIP_COOKIE_SECURE",
    }
    assert stack["votes_url"] == runner.votes_url
    private = Path(stack["secrets_file"])
    for path in (private, runner.data / "secrets.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert json.loads(private.read_text()) == generated
    # What a `shipskip serve votes` beside `make run` reads: the runner's keys, from the private file.
    read = subprocess.run(
        [
            sys.executable,
            "-c",
            "from services.shared.config import Env; print(Env().text('SHIPSKIP_TOKEN_KEYS'))",
        ],
        env={k: v for k, v in runner.env.items() if k != "SHIPSKIP_TOKEN_KEYS"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert read.stdout.strip() == generated["SHIPSKIP_TOKEN_KEYS"]


def test_output_to_a_reader_that_went_away_ends_quietly(runner: Runner) -> None:
    # `shipskip status | head -1` as a shell runs it: one line out, nothing on stderr.
    piped = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m services.cli status 2>{runner.data}/status.err | head -1"],
        env=runner.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.stdout.startswith("stream head"), piped.stdout + piped.stderr
    assert (runner.data / "status.err").read_text() == ""
    # The same, with the reader gone before the first byte: every write fails (EPIPE), deterministically.
    for args in (["status"], ["status", "--json"], ["--help"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run(
                [sys.executable, "-m", "services.cli", *args],
                env=runner.env,
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(write_end)
        assert result.stderr == "", (args, result.stderr)
        # As a Unix tool ended by SIGPIPE; argparse's --help ignores a failed write itself (and exits 0).
        assert result.returncode == (0 if args == ["--help"] else 128 + signal.SIGPIPE), args


def test_a_killed_runner_takes_every_process_of_its_stack_with_it(tmp_path: Path) -> None:
    data = new_data_folder()
    try:
        with running(tmp_path, data) as runner:
            tree = runner.tree()
            names = {command.split("/")[-1] for command in map(_command_name, tree)}
            assert {"nats-server", "redis-server", "postgres"} <= names, names
            assert len(runner.projector_pids()) == 1
            lock = data / LOCK_NAME
            assert set(tree) <= processes_holding(lock)  # each holds the data folder's lock (lifeline.py)
            os.kill(runner.process.pid, signal.SIGKILL)
            runner.process.wait()
            wait_until(lambda: not still_running(tree), timeout=20)
            assert not port_open(runner.votes_port)
        # A new runner on the same data starts (nothing of the old stack holds it), also with its output closed
        # (`make run | head -3` once head has exited): it serves, counts, and stops cleanly when asked.
        with running(tmp_path, data, closed_stdout=True) as again:
            cast_vote(again.votes_url)
            wait_until(lambda: ballots_counted(again) == 1, timeout=30)
            assert again.stop() == 0, again.output()
            assert not again.stack_file.exists()
            assert "Traceback" not in again.output()
            assert "Broken pipe" not in again.output()
    finally:
        remove_data_folder(data)


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name
    except OSError:
        return ""


def test_a_new_runner_stops_what_a_killed_one_left_behind(tmp_path: Path) -> None:
    """A process of a killed runner's stack that ignores the signal the kernel sent it still holds the data's lock:
    the next runner waits a little, then kills it, and takes the lock."""
    data = tmp_path / "data"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, subprocess, sys, time\n"
            "from pathlib import Path\n"
            "from infra.stack.lifeline import child_options, pass_to_children\n"
            "from infra.stack.stack_lock import StackLock\n"
            f"lock = StackLock.acquire(Path({str(data)!r}))\n"
            "pass_to_children(lock.fd)\n"
            "code = 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True);"
            " time.sleep(600)'\n"
            "child = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, **child_options())\n"
            "child.stdout.readline()\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    leftover = int(holder.stdout.readline())
    try:
        with pytest.raises(StackBusy, match=f"runner pid {holder.pid}, still starting"):
            StackLock.acquire(data, grace_s=1.0)
        holder.kill()
        holder.wait()
        time.sleep(0.5)
        assert leftover in processes_holding(data / LOCK_NAME)  # SIGTERM from the kernel, ignored
        said: list[str] = []
        lock = StackLock.acquire(data, grace_s=1.0, say=said.append)
        lock.release()
        assert any(f"(pid {holder.pid}) is gone" in line for line in said), said
        assert any(str(leftover) in line for line in said), said
        wait_until(lambda: not Path(f"/proc/{leftover}").exists() or _zombie(leftover), timeout=5)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        if Path(f"/proc/{leftover}").exists():
            os.kill(leftover, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_rebuild_into_two_partitions_under_the_runner_starts_two_projectors_and_the_next_run_too(
    tmp_path: Path,
) -> None:
    data = new_data_folder()
    try:
        with running(tmp_path, data) as runner:
            cast_vote(runner.votes_url)
            wait_until(lambda: ballots_counted(runner) == 1, timeout=30)
            rebuilt = run_cli(runner.env, "rebuild", "--partitions", "2")
            assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
            assert "Traceback" not in rebuilt.stderr
            # The old projector notices within its idle check (5 s) and exits; the runner starts the new layout's.
            wait_until(lambda: "starting a projector for each" in runner.output(), timeout=30)
            wait_until(lambda: len(runner.projector_pids()) == 2, timeout=30)
            assert "keeps crashing" not in runner.output()
            cast_vote(runner.votes_url)
            wait_until(lambda: ballots_counted(runner) == 2, timeout=30)
            assert runner.stop() == 0, runner.output()
        # The next run starts the projection's layout; one that asks for another says so in one line.
        with running(tmp_path, data) as again:
            assert "projector  2 partitions" in again.output()
            assert len(again.projector_pids()) == 2
            cast_vote(again.votes_url)
            wait_until(lambda: ballots_counted(again) == 3, timeout=30)
        env, _, _ = runner_env(tmp_path, SHIPSKIP_PARTITIONS="1")
        wrong = launch(tmp_path, data, env, name="wrong")
        assert wrong.wait(120) == 2
        out = (tmp_path / "wrong.out").read_text()
        assert "shipskip: SHIPSKIP_PARTITIONS=1, but the projection is folded in 2 partition(s)" in out, out
        assert "Traceback" not in out
    finally:
        remove_data_folder(data)


def test_a_service_that_keeps_crashing_stops_the_stack_naming_it_with_its_log(tmp_path: Path) -> None:
    with running(tmp_path) as runner:
        tree = runner.tree()
        votes = runner.granian_main(runner.votes_port)
        # The votes API's port taken by someone else: every new start of it fails at once.
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            os.killpg(votes, signal.SIGKILL)

            def bind() -> bool:
                try:
                    squatter.bind(("127.0.0.1", runner.votes_port))
                except OSError:
                    return False
                return True

            wait_until(bind, timeout=10)
            squatter.listen()
            assert runner.process.wait(90) == 1
        out = runner.output()
        assert "shipskip: votes keeps crashing (5 times in" in out, out
        delays = re.findall(r"^shipskip: votes (?:killed|exited) .* restarting it in (\S+) s$", out, re.MULTILINE)
        assert delays == ["0.5", "1", "2", "4"], out
        assert "Address already in use" in out  # the end of its log
        assert "stopping…" in out
        assert not still_running(tree)
        assert not runner.stack_file.exists()
