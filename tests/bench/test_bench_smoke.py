"""A seconds-long run of the benchmark harness, so that ``make bench`` keeps working.

It runs every registered benchmark once with tiny sizes against the suite's servers and checks that each left
its figures and that the report files were written. Nothing here is timed: no figure is compared with anything.
"""

import dataclasses
import shutil
from pathlib import Path

import msgspec
import pytest

from bench.config import QUICK
from bench.load import LoadSpec, VoteScenario, wrk_command
from bench.registry import BENCHMARKS
from bench.report import BEGIN, END, Report, update_section
from bench.runner import run_harness
from bench.soak_report import SOAK_BEGIN, SOAK_END, SoakReport
from infra.stack.servers import ServerAddresses

# One figure each benchmark must leave behind (the rebuild's only once the installed shipskip has the command).
EXPECTED = {
    "baseline.bare.post": "baseline.bare.post.rps",
    "baseline.plain.post": "baseline.plain.post.rps",
    "ingest": "ingest.votes_per_s",
    "baseline.bare.get": "baseline.bare.get.rps",
    "baseline.plain.get": "baseline.plain.get.rps",
    "read": "read.rps",
    "freshness": "freshness.get_p99_ms",
    "memory": "memory.votes.peak_mb",
    "soak": "soak.exact",
    "baseline.nats.publish": "baseline.nats.publish.publish_async_per_s",
    "baseline.nats.read": "baseline.nats.read.best_per_s",
    "projector.catchup": "projector.catchup_events_per_s",
    "rebuild": "rebuild.events_per_s",
    "catalog.scale": "catalog.scale.change.visible_s",
}


def test_every_benchmark_is_expected_to_leave_a_figure() -> None:
    assert {b.name for b in BENCHMARKS} == set(EXPECTED)


def test_a_tiny_run_of_the_harness_measures_every_path(servers: ServerAddresses, tmp_path: Path) -> None:
    config = dataclasses.replace(
        QUICK,
        duration_s=1.0,
        warmup_s=0.0,
        connections=8,
        tokens=300,
        events=2_000,
        publish_messages=1_000,
        soak_votes=1_500,
        soak_max_s=5.0,
        freshness_s=1.5,
        freshness_rate=200.0,
        soak_s=3.0,
        soak_vote_rate=100.0,
        soak_read_rate=50.0,
        soak_sse_clients=20,
        soak_voter_tokens=200,
        soak_comparisons=3,
        scale_tools=100,
        scale_comparisons=300,
        scale_sse_comparisons=10,
        scale_sse_clients=20,
        scale_run_s=1.0,
        results_dir=tmp_path,
    )
    report = run_harness(config, servers=servers, command="pytest tests/bench")
    assert report.failures == []
    missing = {name: figure for name, figure in EXPECTED.items() if figure not in report.figures}
    if "rebuild" in missing and any("no `rebuild` command" in note for note in report.notes):
        del missing["rebuild"]
    assert missing == {}
    assert report.figures["ingest.failed"].max == 0
    # The soak's tallies (fold of the stream, Postgres, read API) equal the generator's record of its votes.
    assert report.figures["soak.exact"].max == 1
    assert report.figures["soak.votes_accepted"].max > 0
    assert report.figures["soak.sse_clients_connected"].max == 20
    assert msgspec.json.decode((tmp_path / "soak.json").read_bytes(), type=SoakReport).exactness.exact
    written = msgspec.json.decode((tmp_path / "latest.json").read_bytes(), type=Report)
    assert [c.figure for c in written.checks] == [c.figure for c in report.checks]
    table = (tmp_path / "latest.md").read_text()
    assert "| ingest | accepted votes/s vs bare POST |" in table


def test_the_soak_alone_leaves_the_other_results_and_fills_its_own(servers: ServerAddresses, tmp_path: Path) -> None:
    """``make soak``: soak.json, soak.md and the soak's section of the page; latest.* and the bench table untouched."""
    doc = tmp_path / "performance.md"
    doc.write_text(f"# x\n{BEGIN}\nperformance table\n{END}\n\n{SOAK_BEGIN}\nold soak\n{SOAK_END}\n")
    config = dataclasses.replace(
        QUICK,
        quick=False,
        only=("soak",),
        soak_s=2.0,
        soak_vote_rate=100.0,
        soak_read_rate=50.0,
        soak_sse_clients=10,
        soak_voter_tokens=100,
        soak_comparisons=2,
        results_dir=tmp_path / "results",
    )
    report = run_harness(config, servers=servers, command="make soak", doc=doc)
    assert report.failures == []
    assert not (tmp_path / "results" / "latest.json").exists()
    soak = msgspec.json.decode((tmp_path / "results" / "soak.json").read_bytes(), type=SoakReport)
    assert soak.command == "make soak"
    assert soak.exactness.exact
    assert soak.passed  # every SSE client ended on the final figures too
    assert soak.exactness.accepted > 0
    # The servers are the suite's here (given, not started by the bench), so only the services are watched.
    assert [row.name for row in soak.memory] == ["votes", "read", "projector"]
    text = doc.read_text()
    assert "performance table" in text
    assert "old soak" not in text
    assert "**Tallies after the drain: ✅ exact.**" in text
    assert (tmp_path / "results" / "soak.md").read_text() in text


def test_the_section_is_replaced_between_its_markers(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(f"# x\n\n## Latest run\n\n{BEGIN}\nold\n{END}\n\n## Next\n")
    assert update_section(doc, "new table\n")
    assert doc.read_text() == f"# x\n\n## Latest run\n\n{BEGIN}\nnew table\n{END}\n\n## Next\n"
    doc.write_text("# no markers\n")
    assert not update_section(doc, "new table\n")


def test_wrk_is_given_the_vote_ring() -> None:
    if shutil.which("wrk") is None:
        pytest.skip(
            "wrk is not installed: the smoke run drove the HTTP load with the Python generator instead "
            "(`make bench` installs wrk from Debian's packages)"
        )
    vote = VoteScenario("/tmp/tokens.txt", "a-vs-b", ("a", "b"), cursor=40)
    command = wrk_command(LoadSpec(port=8080, connections=32, duration_s=2.5, vote=vote, max_requests=101), threads=2)
    assert command[command.index("-c") + 1] == "32"
    assert command[command.index("-d") + 1] == "3s"
    assert command[-9:] == ["--", "vote", "51", "/tmp/tokens.txt", "a-vs-b", "a", "b", "40", "2"]
    assert command[-10] == "http://127.0.0.1:8080/v1/comparisons/a-vs-b/votes"
