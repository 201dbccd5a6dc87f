"""The soak's pieces that need no servers: its comparisons, the voters' model, the memory table, the error counts.

The soak itself runs, seconds long, in test_bench_smoke.py.
"""

from pathlib import Path

from bench.load import LoadResult
from bench.monitor import Watch
from bench.procs import TreeSample
from bench.soak import soak_comparisons
from bench.soak_report import errors_by_kind, memory_rows
from bench.soak_sse import SseSoakResult
from bench.soak_votes import Bucket, SoakComparison, Voters, VoteSoakResult, VoteSoakSpec, bucket_count
from contracts.catalog import Catalog, decode_catalog, encode_catalog
from infra.stack.bootstrap import DEMO_CATALOG


def test_the_soak_comparisons_are_a_valid_catalogue_beside_the_demo_one() -> None:
    demo = decode_catalog(DEMO_CATALOG.read_bytes())
    added = soak_comparisons(demo, 6)
    catalog = decode_catalog(encode_catalog(Catalog(tools=demo.tools, comparisons=[*demo.comparisons, *added])))
    ids = [c.id for c in catalog.comparisons]
    assert len(ids) == len(set(ids)) == len(demo.comparisons) + 6
    assert all(c.tools[0] != c.tools[1] for c in added)
    assert len({tuple(c.tools) for c in added}) == 3  # every pair of the demo's three tools


def _spec(tmp_path: Path, voters: int) -> VoteSoakSpec:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"token-{i}\n" for i in range(voters)))
    return VoteSoakSpec(
        port=1,
        rate=1.0,
        connections=1,
        duration_s=1.0,
        tokens_file=str(tokens),
        comparisons=[SoakComparison("c1", ("a", "b")), SoakComparison("c2", ("a", "c"))],
        accepted_file=str(tmp_path / "accepted.txt"),
        bucket_s=1.0,
    )


def test_the_voters_model_follows_the_answers_and_never_doubles_a_voter(tmp_path: Path) -> None:
    voters = Voters(_spec(tmp_path, 3))
    verdicts: dict[tuple[int, int, int], str | None] = {}
    for _ in range(200):
        key, verdict, raw = voters.next_vote()
        assert voters.busy == {key[2]}
        assert raw.startswith(b"DELETE " if verdict is None else b"POST ")
        assert b"Idempotency-Key: soak-8-" in raw
        if verdict is None:
            assert verdicts.get(key) is not None  # only a ballot that holds a verdict is retracted
        voters.answered(key, verdict)
        verdicts[key] = verdict
        voters.busy.clear()
    assert set(voters.actions) == {"cast", "change", "retract", "repeat"}
    expected = {"c1": {"a": [0, 0], "b": [0, 0]}, "c2": {"a": [0, 0], "c": [0, 0]}}
    names = {0: ("c1", ("a", "b")), 1: ("c2", ("a", "c"))}
    for (c, t, _), verdict in verdicts.items():
        if verdict is not None:
            comparison, tools = names[c]
            expected[comparison][tools[t]][0 if verdict == "ship" else 1] += 1
    assert voters.expected() == {c: {t: (s, k) for t, (s, k) in tools.items()} for c, tools in expected.items()}


def test_a_busy_voter_is_not_picked(tmp_path: Path) -> None:
    voters = Voters(_spec(tmp_path, 2))
    first, _, _ = voters.next_vote()
    for _ in range(20):
        second, _, _ = voters.next_vote()
        assert second[2] != first[2]
        voters.busy.discard(second[2])


def _watch(series: dict[str, list[float]]) -> Watch:
    length = len(next(iter(series.values())))
    trees = [
        (float(t), {name: TreeSample(values[t], values[t], 0.0, 1) for name, values in series.items()})
        for t in range(length)
    ]
    return Watch(trees=trees, started=0.0, stopped=float(length - 1))


def test_the_memory_table_holds_each_bucket_and_judges_growth_after_the_warmup() -> None:
    steady = [50.0] * 5 + [80.0] * 96  # warms up in its first seconds, then flat
    leaking = [50.0 + t for t in range(101)]  # a MiB a second, for ever
    rows = {
        row.name: row
        for row in memory_rows(_watch({"steady": steady, "leaking": leaking}), ["steady", "leaking", "absent"], 25.0, 4)
    }
    assert set(rows) == {"steady", "leaking"}
    assert rows["steady"].at == [80.0, 80.0, 80.0, 80.0]
    assert (rows["steady"].low, rows["steady"].high, rows["steady"].flat) == (50.0, 80.0, True)
    assert rows["leaking"].at == [75.0, 100.0, 125.0, 150.0]
    assert rows["leaking"].after_warmup == 70.0
    assert not rows["leaking"].flat
    assert round(rows["leaking"].slope_per_min) == 60


def test_errors_are_counted_by_kind_and_a_clean_run_has_none() -> None:
    votes = VoteSoakResult(
        duration_s=1.0, votes=10, accepted=10, unchanged=0, refused=0, statuses={"202": 10}, timeouts=0,
        connection_errors=0, retries=0, unknown=0, duplicate_event_ids=0, actions={"cast": 10}, p50_ms=1.0,
        p99_ms=1.0, max_ms=1.0, late_p99_ms=0.0, late_max_ms=0.0, buckets=[Bucket(accepted=10)], expected={},
    )  # fmt: skip
    reads = LoadResult("python", 5, 1.0, {"200": 5}, 0, 1.0, 1.0, 1.0, 1.0, 1.0)
    sse = SseSoakResult(
        clients=2, connected_at_start=2, connects=2, reconnects=0, drops={}, connect_errors={}, events=8,
        events_per_client_min=4, events_per_client_max=4, clients_with_events=[2], longest_silence_s=0.1,
        silent_clients=0, behind_at_end=0, last_figures=[],
    )  # fmt: skip
    assert errors_by_kind(votes, reads, sse) == {}
    votes.statuses["503"] = 3
    votes.timeouts = 2
    reads.statuses["500"] = 1
    reads.socket_errors, reads.timeouts = 4, 1
    sse.drops["broken"] = 1
    sse.connect_errors["not an event stream: b'HTTP/1.1 503'"] = 2
    sse.connected_at_start = 1
    assert errors_by_kind(votes, reads, sse) == {
        "votes: HTTP 503": 3,
        "reads: HTTP 500": 1,
        "votes: client timeouts": 2,
        "reads: client timeouts": 1,
        "reads: broken connections": 3,
        "SSE: clients not connected at the start": 1,
        "SSE: stream broken": 1,
        "SSE: connect not an event stream: b'HTTP/1.1 503'": 2,
    }


def test_buckets_round_to_the_configured_length() -> None:
    assert bucket_count(600.0, 60.0) == 10
    assert bucket_count(3.0, 0.5) == 6
    assert bucket_count(1.0, 60.0) == 1
