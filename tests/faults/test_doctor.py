"""``shipskip doctor`` against the real servers: everything in place on a running stack (exit 0), and each thing it
checks named with its fix when it is wrong (exit 1): NATS, Postgres or Redis stopped, Redis frozen, the database not
migrated, the partitions' layout not SHIPSKIP_PARTITIONS, the stream's duplicate window not the setting's.

Stops the session's own servers, one at a time, each restarted in a ``finally`` (as tests/faults/test_outages.py).
"""

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.migrate import MIGRATIONS
from infra.stack.servers import EmbeddedServers, ServerAddresses, ServerName
from services.operators.doctor import _skew, redacted
from tests.support import Pipeline, empty_database, run_cli, running_pipeline

CHECKS = {
    "settings", "nats", "jetstream", "stream", "consumers", "catalogue", "clock nats",
    "postgres", "clock postgres", "migrations", "partitions", "redis", "clock redis",
}  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("doctor")) as running:
        yield running


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(env, "doctor", *args, timeout=120)


def findings(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]]]:
    result = doctor(env, "--json")
    report = json.loads(result.stdout)
    assert report["ok"] == (result.returncode == 0), result.stdout
    return result.returncode, {finding["check"]: finding for finding in report["findings"]}


def test_everything_is_in_place_on_the_running_stack(pipeline: Pipeline) -> None:
    result = doctor(pipeline.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("shipskip doctor: everything shipskip needs is in place"), result.stdout
    assert "Traceback" not in result.stderr
    code, found = findings(pipeline.env)
    assert code == 0
    assert set(found) == CHECKS
    assert {name: f["status"] for name, f in found.items()} == dict.fromkeys(CHECKS, "ok"), found
    assert found["nats"]["detail"].startswith("nats-server 2.")
    assert found["stream"]["detail"].startswith("VOTES: votes.v1.*, file storage")
    assert found["consumers"]["detail"].startswith("tally:")
    assert "1 partition(s): tally at" in found["partitions"]["detail"]
    assert "from this host's" in found["clock postgres"]["detail"]


@pytest.mark.parametrize(
    ("server", "fragment"),
    [("nats", "cannot reach NATS"), ("postgres", "cannot reach Postgres"), ("redis", "cannot reach Redis")],
)
def test_a_stopped_server_is_named_with_what_to_do(
    pipeline: Pipeline, stack: EmbeddedServers, server: ServerName, fragment: str
) -> None:
    try:
        stack.stop_server(server)
        started = time.monotonic()
        result = doctor(pipeline.env)
        took = time.monotonic() - started
        code, found = findings(pipeline.env)
    finally:
        stack.start_server(server)
    assert result.returncode == 1, result.stdout
    assert code == 1
    assert "Traceback" not in result.stderr
    assert found[server]["status"] == "fail"
    assert fragment in found[server]["detail"]
    assert found[server]["fix"].startswith(f"start {'nats-server' if server == 'nats' else server.capitalize()}")
    failed = {name for name, finding in found.items() if finding["status"] == "fail"}
    assert failed == {server}, found
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL"))
    assert fragment in line
    assert "fix: start" in result.stdout
    assert result.stdout.strip().endswith("shipskip doctor: 1 problem(s)")
    assert took < 60


def test_a_frozen_server_is_named_not_waited_on(pipeline: Pipeline, stack: EmbeddedServers) -> None:
    """Redis paused (SIGSTOP): it accepts connections and never answers."""
    pid = stack.pid("redis")
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        code, found = findings(pipeline.env)
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 1
    assert found["redis"]["status"] == "fail"
    assert "no answer within 5 s" in found["redis"]["detail"]
    assert took < 30


def test_an_unmigrated_database_is_named(pipeline: Pipeline, servers: ServerAddresses) -> None:
    with empty_database(servers, "shipskip_doctor") as database_url:
        code, found = findings({**pipeline.env, "SHIPSKIP_DATABASE_URL": database_url})
    assert code == 1
    assert found["migrations"]["status"] == "fail"
    every = len(list(MIGRATIONS.glob("*.sql")))  # every migration there is, so that a new one does not break this
    assert found["migrations"]["detail"].startswith(f"{every} of {every} not applied: 0001_tally")
    assert found["migrations"]["fix"] == "run `shipskip migrate`"
    assert found["partitions"]["status"] == "skip"


def test_partitions_and_the_stream_unlike_the_settings_are_named(pipeline: Pipeline) -> None:
    env = {**pipeline.env, "SHIPSKIP_PARTITIONS": "2", "SHIPSKIP_DUPLICATE_WINDOW_S": "60"}
    code, found = findings(env)
    assert code == 1
    partitions = found["partitions"]
    assert partitions["status"] == "fail"
    assert "folded in 1 partition(s); SHIPSKIP_PARTITIONS is 2" in partitions["detail"]
    assert partitions["fix"] == "set SHIPSKIP_PARTITIONS=1, or re-partition with `shipskip rebuild --partitions 2`"
    stream = found["stream"]
    assert stream["status"] == "fail"
    assert "duplicate_window 120 s (SHIPSKIP_DUPLICATE_WINDOW_S is 60)" in stream["detail"]
    # The consumers of two partitions do not exist (their projectors never ran).
    assert found["consumers"]["status"] == "warn"
    assert "tally-0-of-2, tally-1-of-2" in found["consumers"]["detail"]


def test_a_wrong_setting_is_named_before_any_server_is_asked() -> None:
    env = {"SHIPSKIP_NATS_URL": "http://127.0.0.1:1", "SHIPSKIP_STACK_FILE": "/nonexistent/stack.json"}
    result = run_cli(env, "doctor", timeout=60)
    assert result.returncode == 1
    assert "FAIL  settings" in result.stdout
    assert "SHIPSKIP_NATS_URL" in result.stdout


def test_clock_skew_and_redaction() -> None:
    now = time.time()
    assert _skew(now + 0.2, now, now + 0.01, "NATS").status == "ok"
    late = _skew(now + 3.0, now, now + 0.01, "Postgres")
    assert late.status == "warn"
    assert late.detail.startswith("Postgres clock +2.995 s")
    assert "NTP" in late.fix
    assert redacted("postgresql://shipskip:secret@db:5432/shipskip") == "postgresql://shipskip:***@db:5432/shipskip"
    assert redacted("nats://token@n1:4222") == "nats://***@n1:4222"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
