"""The fold, without servers: changes, retractions, redelivery, reordering and duplicates."""

import itertools
import random
from datetime import UTC, datetime

from contracts.events import Event, VoteCast, VoteRetracted
from services.tally.fold import Ballot, BallotKey, fold

AT = datetime(2026, 11, 23, tzinfo=UTC)


def cast(voter: str, verdict: str, tool: str = "tool-a", comparison: str = "a-vs-b") -> VoteCast:
    return VoteCast(
        event_id=f"e-{voter}-{verdict}",
        comparison_id=comparison,
        tool_id=tool,
        verdict=verdict,  # type: ignore[arg-type]
        voter_id=voter,
        at=AT,
    )


def retract(voter: str, tool: str = "tool-a", comparison: str = "a-vs-b") -> VoteRetracted:
    return VoteRetracted(event_id=f"r-{voter}", comparison_id=comparison, tool_id=tool, voter_id=voter, at=AT)


def fold_all(
    batches: list[list[tuple[int, Event]]],
) -> tuple[dict[BallotKey, Ballot], dict[tuple[str, str], list[int]]]:
    """Fold batch after batch as the projector does, carrying ballots and summing deltas."""
    ballots: dict[BallotKey, Ballot] = {}
    totals: dict[tuple[str, str], list[int]] = {}
    for batch in batches:
        outcome = fold(batch, ballots)
        ballots.update(outcome.ballots)
        for key, (ship, skip) in outcome.deltas.items():
            total = totals.setdefault(key, [0, 0])
            total[0] += ship
            total[1] += skip
    return ballots, {k: v for k, v in totals.items() if v != [0, 0]}


def test_a_cast_counts_once() -> None:
    _, totals = fold_all([[(1, cast("v1", "ship")), (2, cast("v2", "skip"))]])
    assert totals == {("a-vs-b", "tool-a"): [1, 1]}


def test_a_change_moves_one_count_from_ship_to_skip() -> None:
    _, totals = fold_all([[(1, cast("v1", "ship"))], [(2, cast("v1", "skip"))]])
    assert totals == {("a-vs-b", "tool-a"): [0, 1]}


def test_a_retraction_removes_the_count_and_keeps_the_sequence() -> None:
    ballots, totals = fold_all([[(1, cast("v1", "ship")), (2, retract("v1"))]])
    assert totals == {}
    assert ballots[("a-vs-b", "tool-a", "v1")] == Ballot(None, 2)


def test_retracting_nothing_changes_nothing() -> None:
    _, totals = fold_all([[(1, retract("v1"))]])
    assert totals == {}


def test_a_redelivered_batch_changes_nothing_twice() -> None:
    batch: list[tuple[int, Event]] = [(1, cast("v1", "ship")), (2, cast("v2", "ship"))]
    _, totals = fold_all([batch, batch, batch[1:]])
    assert totals == {("a-vs-b", "tool-a"): [2, 0]}


def test_an_older_event_after_a_newer_one_is_ignored() -> None:
    _, totals = fold_all([[(5, cast("v1", "skip"))], [(3, cast("v1", "ship"))]])
    assert totals == {("a-vs-b", "tool-a"): [0, 1]}


def test_a_duplicate_within_a_batch_counts_once() -> None:
    _, totals = fold_all([[(1, cast("v1", "ship")), (1, cast("v1", "ship"))]])
    assert totals == {("a-vs-b", "tool-a"): [1, 0]}


def test_tools_and_comparisons_are_tallied_apart() -> None:
    _, totals = fold_all(
        [
            [
                (1, cast("v1", "ship", "tool-a")),
                (2, cast("v1", "skip", "tool-b")),
                (3, cast("v1", "ship", "tool-a", "c-2")),
            ]
        ]
    )
    assert totals == {("a-vs-b", "tool-a"): [1, 0], ("a-vs-b", "tool-b"): [0, 1], ("c-2", "tool-a"): [1, 0]}


def test_any_redelivery_order_and_batching_gives_the_clean_result() -> None:
    rng = random.Random(7)
    voters = [f"v{i}" for i in range(12)]
    events: list[tuple[int, Event]] = []
    for seq in range(1, 400):
        voter, tool = rng.choice(voters), rng.choice(["tool-a", "tool-b"])
        roll = rng.random()
        event: Event = retract(voter, tool) if roll < 0.2 else cast(voter, "ship" if roll < 0.6 else "skip", tool)
        events.append((seq, event))
    clean_ballots, clean = fold_all([events])
    expected: dict[tuple[str, str], list[int]] = {}
    for (comparison, tool, _), ballot in clean_ballots.items():
        if ballot.verdict is not None:
            expected.setdefault((comparison, tool), [0, 0])[0 if ballot.verdict == "ship" else 1] += 1
    assert clean == expected
    for _ in range(30):
        delivered = events + rng.sample(events, 80)  # duplicates and redeliveries
        rng.shuffle(delivered)
        cuts = sorted(rng.sample(range(1, len(delivered)), 10))
        batches = [delivered[a:b] for a, b in itertools.pairwise([0, *cuts, len(delivered)])]
        assert fold_all(batches)[1] == clean
