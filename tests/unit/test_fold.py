"""The fold, without servers: changes, retractions, redelivery, reordering and duplicates."""

import itertools
import random
from datetime import UTC, datetime

from contracts.events import Event, Origin, VoteCast, VoteRetracted, VoterVoided
from services.tally.fold import Ballot, BallotKey, FoldState, fold

AT = datetime(2026, 11, 23, tzinfo=UTC)


def cast(
    voter: str, verdict: str, tool: str = "tool-a", comparison: str = "a-vs-b", client: str | None = None
) -> VoteCast:
    return VoteCast(
        event_id=f"e-{voter}-{verdict}",
        comparison_id=comparison,
        tool_id=tool,
        verdict=verdict,  # type: ignore[arg-type]
        voter_id=voter,
        at=AT,
        origin=Origin(client=client),
    )


def void(voter: str) -> VoterVoided:
    return VoterVoided(event_id=f"x-{voter}", voter_id=voter, reason="test", at=AT)


def retract(voter: str, tool: str = "tool-a", comparison: str = "a-vs-b") -> VoteRetracted:
    return VoteRetracted(event_id=f"r-{voter}", comparison_id=comparison, tool_id=tool, voter_id=voter, at=AT)


def fold_all(
    batches: list[list[tuple[int, Event]]], limit: int = 1000
) -> tuple[dict[BallotKey, Ballot], dict[tuple[str, str], list[int]]]:
    """Fold batch after batch as the projector does, carrying the state and summing [ship, skip, uncounted...]."""
    state = FoldState()
    totals: dict[tuple[str, str], list[int]] = {}
    for batch in batches:
        outcome = fold(batch, state, ballots_per_client_day=limit)
        state.ballots.update(outcome.ballots)
        state.quotas.update(outcome.quotas)
        state.voided.update(outcome.voided)
        for key, delta in outcome.deltas.items():
            total = totals.setdefault(key, [0, 0, 0, 0])
            for i, change in enumerate(delta):
                total[i] += change
    return state.ballots, {k: v[:2] for k, v in totals.items() if v[:2] != [0, 0]}


def test_a_cast_counts_once() -> None:
    _, totals = fold_all([[(1, cast("v1", "ship")), (2, cast("v2", "skip"))]])
    assert totals == {("a-vs-b", "tool-a"): [1, 1]}


def test_a_change_moves_one_count_from_ship_to_skip() -> None:
    _, totals = fold_all([[(1, cast("v1", "ship"))], [(2, cast("v1", "skip"))]])
    assert totals == {("a-vs-b", "tool-a"): [0, 1]}


def test_a_retraction_removes_the_count_and_keeps_the_sequence() -> None:
    ballots, totals = fold_all([[(1, cast("v1", "ship")), (2, retract("v1"))]])
    assert totals == {}
    assert ballots[("a-vs-b", "tool-a", "v1")] == Ballot(None, 2, True)


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


def test_the_counting_policy_keeps_ballots_past_the_daily_quota_uncounted() -> None:
    batch: list[tuple[int, Event]] = [(i, cast(f"v{i}", "ship", client="net-1")) for i in range(1, 6)]
    batch.append((6, cast("v6", "skip", client="net-2")))
    ballots, totals = fold_all([batch[:2], batch[2:]], limit=3)
    assert totals == {("a-vs-b", "tool-a"): [3, 1]}
    assert [ballots[("a-vs-b", "tool-a", f"v{i}")].counted for i in range(1, 7)] == [True] * 3 + [False] * 2 + [True]
    # An uncounted ballot stays uncounted when it changes; a counted one keeps counting.
    _, totals = fold_all(
        [batch, [(7, cast("v5", "skip", client="net-1")), (8, cast("v1", "skip", client="net-1"))]], limit=3
    )
    assert totals == {("a-vs-b", "tool-a"): [2, 2]}


def test_a_retraction_first_does_not_dodge_the_quota() -> None:
    events: list[tuple[int, Event]] = [
        (1, cast("v1", "ship", client="net-1")),
        (2, retract("v2")),
        (3, cast("v2", "ship", client="net-1")),
    ]
    _, totals = fold_all([events], limit=1)
    assert totals == {("a-vs-b", "tool-a"): [1, 0]}


def test_a_void_removes_every_ballot_of_the_voter_now_and_later() -> None:
    events: list[tuple[int, Event]] = [
        (1, cast("bad", "ship", "tool-a")),
        (2, cast("bad", "ship", "tool-b", "c-2")),
        (3, cast("good", "skip", "tool-a")),
        (4, void("bad")),
        (5, cast("bad", "skip", "tool-a")),
        (6, cast("bad", "ship", "tool-c", "c-3")),
    ]
    clean = fold_all([events])[1]
    assert clean == {("a-vs-b", "tool-a"): [0, 1]}
    for cut in range(1, len(events)):
        assert fold_all([events[:cut], events[cut - 1 :], events[2:]])[1] == clean


def test_the_quota_day_is_the_utc_day_of_the_event() -> None:
    from datetime import timedelta, timezone

    from services.tally.fold import utc_day

    assert utc_day(datetime(2026, 11, 23, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == "2026-11-24"
    assert utc_day(datetime(2026, 11, 23, 0, 0, tzinfo=UTC)) == "2026-11-23"
