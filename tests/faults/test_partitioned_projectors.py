"""Two projector processes on disjoint partitions (SHIPSKIP_PARTITIONS=2, one folding partition 0, the other 1)
under sustained voting with changes of mind, retractions and a void, each killed with SIGKILL in the middle of a
batch and restarted: the projection equals a clean fold of the stream (the independent model of
tests/property/model.py), the read API serves it, and a single projector's fold of the same stream (a rebuild into
one partition) gives the very same ballots and tallies. Routed (the stream stores each event under its partition's
subject and each consumer reads its own) and not (each consumer reads every event and the projector picks; under
``-m slow``)."""

import asyncio
import functools
import json
from collections import Counter
from pathlib import Path

import nats
import pytest

from contracts.events import VoteCast, VoteRetracted
from contracts.subjects import VOTES_STREAM
from infra.stack.servers import ServerAddresses
from services.tally.partitions import partition_name, partition_of
from tests.faults.ingest import LOAD_ENV, Ingest, served_tallies
from tests.partitioned import (
    COMPARISON_TOOLS,
    caught_up,
    consumer_filters,
    owned_heads,
    partition_positions,
    partitioned_pipeline,
    projection_tables,
    stored_subjects,
)
from tests.property.model import Model
from tests.support import run_cli, stream_events, stream_seq, wait_until

PARTITIONS = 2
LIMIT = int(LOAD_ENV["SHIPSKIP_BALLOTS_PER_CLIENT_DAY"])


async def unacked(servers: ServerAddresses, consumer: str) -> int:
    """Messages delivered to a partition's projector and not acknowledged yet: a batch in its hands."""
    nc = await nats.connect(servers.nats_url)
    try:
        info = await nc.jetstream().consumer_info(VOTES_STREAM, consumer)
        return int(info.num_ack_pending or 0)
    finally:
        await nc.close()


def partition_names() -> list[str]:
    return [partition_name(i, PARTITIONS) for i in range(PARTITIONS)]


def routed_subject(last_token: str) -> str:
    return f"votes.v1.r{PARTITIONS}.{partition_of(last_token, PARTITIONS)}.{last_token}"


def in_hand(servers: ServerAddresses, index: int) -> bool:
    """Whether partition ``index``'s projector holds a batch it has not acknowledged."""
    return asyncio.run(unacked(servers, partition_name(index, PARTITIONS))) > 0


def voter_in_both_partitions(servers: ServerAddresses) -> str:
    """A voter holding a ballot in comparisons of each partition (so that a void reaches both)."""
    seen: dict[str, set[int]] = {}
    for event in asyncio.run(stream_events(servers)):
        if isinstance(event, VoteCast):
            seen.setdefault(event.voter_id, set()).add(partition_of(event.comparison_id, PARTITIONS))
    both = sorted(voter for voter, partitions in seen.items() if len(partitions) == PARTITIONS)
    assert both, "no voter has voted in both partitions yet"
    return both[0]


# Unrouted under `-m slow`: the default run keeps this run routed, and tests/integration/test_partitions.py's
# routing-mismatch test has projectors reading every event (filter votes.v1.>) and staying exact, verified.
@pytest.mark.parametrize("routed", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["routed", "unrouted"])
def test_two_partition_projectors_killed_and_restarted_fold_exactly_what_one_would(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, routed: bool
) -> None:
    log_dir: Path = tmp_path_factory.mktemp("partitioned-projectors")
    # No periodic resync: the read API must stay right through the per-partition notice chains alone.
    env = {**LOAD_ENV, "SHIPSKIP_VIEW_RESYNC_S": "0"}
    with partitioned_pipeline(servers, log_dir, PARTITIONS, routed=routed, **env) as running:
        ingest = Ingest(lambda: running.votes_url, voters_per_worker=30, tools=COMPARISON_TOOLS).start()
        voided = None
        try:
            for round_ in range(4):
                ingest.wait_for_votes(150)
                victim = round_ % PARTITIONS
                wait_until(functools.partial(in_hand, servers, victim), timeout=30, interval=0.01)
                running.projectors[victim].kill()
                ingest.wait_for_votes(100)  # the other partition folds on; this one's votes pile up in the stream
                running.start_projector(victim)
                if round_ == 1:
                    voided = voter_in_both_partitions(servers)
                    result = run_cli(running.env, "void-voter", voided, "--reason", "partition test")
                    assert result.returncode == 0, result.stderr
            ingest.wait_for_votes(150)
        finally:
            ingest.stop()

        last = stream_seq(servers)
        wait_until(lambda: caught_up(servers, PARTITIONS), timeout=60)
        events = asyncio.run(stream_events(servers))
        assert len(events) == last
        kinds = Counter(type(event).__name__ for event in events)
        assert kinds["VoteCast"] > 500, kinds
        assert kinds["VoteRetracted"] > 0, kinds
        assert kinds["VoterVoided"] == 1, kinds
        # Routed: every event stored under its partition's subject, each consumer reading its own; else neither.
        subjects = asyncio.run(stored_subjects(servers))
        filters = [asyncio.run(consumer_filters(servers, partition_name(i, PARTITIONS))) for i in range(PARTITIONS)]
        if routed:
            assert all(s == routed_subject(s.split(".")[-1]) for s in subjects)
            assert all(f"votes.v1.r2.{i}.*" in filters[i] for i in range(PARTITIONS))
        else:
            assert all(s.count(".") == 2 for s in subjects)
            assert filters == [["votes.v1.>"]] * PARTITIONS
        model = Model(LIMIT).run(events)
        tallies, ballots = asyncio.run(projection_tables(servers))
        assert ballots == model.ballots
        assert tallies == model.tallies()
        # The void reached the voter's ballots in both partitions' comparisons.
        assert voided is not None
        voided_ballots = {key: b for key, b in ballots.items() if key[2] == voided}
        assert {partition_of(key[0], PARTITIONS) for key in voided_ballots} == {0, 1}
        # Uncounted, every one: a ballot cast at any time is marked so; one only ever retracted (a DELETE of a tool the
        # voter never cast on, as the load sends) was never decided and holds no verdict to count.
        assert all(
            ballot.counted is False or (ballot.counted is None and ballot.verdict is None)
            for ballot in voided_ballots.values()
        ), voided_ballots
        assert any(ballot.counted is False for ballot in voided_ballots.values())
        changed = {(e.comparison_id, e.tool_id, e.voter_id) for e in events if isinstance(e, VoteRetracted)}
        assert any(ballots[key].verdict is None for key in changed)

        counted = {key: (counts.ship, counts.skip) for key, counts in model.tallies().items()}
        expected_served = {(c, t): counted.get((c, t), (0, 0)) for c, tools in COMPARISON_TOOLS.items() for t in tools}
        wait_until(lambda: served_tallies(running.read_url, COMPARISON_TOOLS) == expected_served, timeout=30)

        verified = run_cli(running.env, "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"verified up to stream position {last}: 0 differences" in verified.stdout, verified.stdout
        status = json.loads(run_cli(running.env, "status", "--json").stdout)
        # A partition reading only its own events stands at its last one; one reading every event, at the head.
        heads = owned_heads(subjects, PARTITIONS) if routed else dict.fromkeys(partition_names(), last)
        assert [(p["partition"], p["position"], p["lag_events"]) for p in status["partitions"]] == [
            (name, head, 0) for name, head in heads.items()
        ]
        assert status["lag_events"] == 0
        assert status["stream_routing"] == (PARTITIONS if routed else None)

        # One projector over the same stream: the rebuild folds it in one pass, in one partition.
        for process in running.projectors.values():
            assert process.stop() == 0
        rebuilt = run_cli(running.env, "rebuild", "--partitions", "1")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert asyncio.run(projection_tables(servers)) == (tallies, ballots)
        assert asyncio.run(partition_positions(servers)) == {"tally": last}
