"""The targets table's rules (the bare POST reported, not a target; ingest held to 4x the plain build), and the
``BENCH_NATS_SYNC`` knob reaching the embedded nats-server (read back from its own monitoring endpoint)."""

from pathlib import Path

import httpx
import pytest

from bench.config import BenchConfig
from bench.registry import Figure
from bench.report import evaluate
from bench.stack import BenchStack
from infra.stack.servers import EmbeddedServers, free_port


def ingest_rows(votes: float, bare: float, plain: float) -> dict[str, tuple[bool | None, bool, str]]:
    figures = {
        "ingest.votes_per_s": Figure("votes/s", [votes]),
        "baseline.bare.post.rps": Figure("req/s", [bare]),
        "baseline.plain.post.rps": Figure("req/s", [plain]),
    }
    return {c.figure: (c.met, c.reported, c.target) for c in evaluate(figures) if c.path == "ingest"}


def test_the_bare_post_is_reported_and_the_plain_build_is_the_target() -> None:
    rows = ingest_rows(votes=4_100, bare=20_000, plain=1_000)
    assert rows["accepted votes/s vs bare POST"] == (None, True, "none (the ceiling)")  # 0.2x: no verdict
    assert rows["accepted votes/s vs plain Postgres"] == (True, False, "≥ 4×")
    assert ingest_rows(votes=3_900, bare=4_000, plain=1_000)["accepted votes/s vs plain Postgres"][0] is False


def test_bench_nats_sync_is_read_from_the_environment_and_checked(tmp_path: Path) -> None:
    assert BenchConfig.from_env({"BENCH_NATS_SYNC": "always"}).nats_sync == "always"
    assert BenchConfig.from_env({}).nats_sync == ""
    assert BenchStack.create(work_dir=tmp_path).nats_config_file() is None
    with pytest.raises(ValueError, match="BENCH_NATS_SYNC"):
        BenchStack.create(work_dir=tmp_path, nats_sync="sometimes")


@pytest.mark.parametrize(("knob", "sync_always"), [("always", True), ("", False)])
def test_bench_nats_sync_reaches_the_embedded_nats_server(tmp_path: Path, knob: str, sync_always: bool) -> None:
    stack = BenchStack.create(work_dir=tmp_path, nats_sync=knob)
    config = stack.nats_config_file() or tmp_path / "plain.conf"
    monitor = free_port()
    # The test's addition: nats-server's monitoring port, to read back what it runs with.
    with config.open("a") as file:
        file.write(f"http: 127.0.0.1:{monitor}\n")
    servers = EmbeddedServers(tmp_path / "servers", nats_config=config)
    try:
        servers.start_server("nats")
        jetstream = httpx.get(f"http://127.0.0.1:{monitor}/varz", timeout=5).json()["jetstream"]["config"]
    finally:
        servers.stop()
    assert jetstream.get("sync_always", False) is sync_always
    assert jetstream["store_dir"].startswith(str(tmp_path / "servers" / "nats"))  # the flags still win
