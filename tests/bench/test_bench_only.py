"""``python -m bench --only NAME``: a benchmark chosen alone brings the baselines its targets are ratios against."""

import dataclasses

import bench.benchmarks  # noqa: F401  (registers the benchmarks)
from bench.config import QUICK
from bench.registry import schedule, selected, with_baselines


def test_ingest_alone_runs_with_the_post_baselines() -> None:
    only = with_baselines(["ingest"])
    names = {b.name for b in selected(dataclasses.replace(QUICK, only=only))}
    assert names == {"ingest", "baseline.bare.post", "baseline.plain.post"}


def test_the_chosen_benchmarks_stay_interleaved_with_their_baselines() -> None:
    config = dataclasses.replace(QUICK, only=with_baselines(["ingest"]), quick=False)
    order = [(b.name, run) for b, run in schedule(selected(config), config)]
    # Round by round: each run of ingest sits between runs of its baselines, as in a full `make bench`.
    assert order[:6] == [
        ("baseline.bare.post", 0), ("baseline.plain.post", 0), ("ingest", 0),
        ("baseline.bare.post", 1), ("baseline.plain.post", 1), ("ingest", 1),
    ]  # fmt: skip


def test_a_name_without_baselines_is_taken_as_it_is() -> None:
    assert with_baselines(["freshness", " "]) == ("freshness",)
