"""The fold, without servers: changes, retractions, redelivery, reordering and duplicates."""

import itertools
import random
from datetime import UTC, datetime

from contracts.events import Event, Origin, VoteCast, VoteRetracted, VoterForgotten, VoterVoided
from services.tally.fold import FORGOTTEN, Ballot, BallotKey, FoldState, fold, fold_into

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
        state.forgotten.update(outcome.forgotten)
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


def forget(voter: str, n: int = 0) -> VoterForgotten:
    return VoterForgotten(event_id=f"f{n}-{voter}", voter_id=voter, at=AT)


def uncounted(batches: list[list[tuple[int, Event]]]) -> dict[tuple[str, str], list[int]]:
    """Per tool, the uncounted [ship, skip] the batches leave."""
    state = FoldState()
    totals: dict[tuple[str, str], list[int]] = {}
    for batch in batches:
        outcome = fold(batch, state, ballots_per_client_day=1000)
        state.absorb(outcome)
        for key, delta in outcome.deltas.items():
            total = totals.setdefault(key, [0, 0])
            total[0] += delta[2]
            total[1] += delta[3]
    return {key: total for key, total in totals.items() if total != [0, 0]}


def test_a_forget_takes_the_voters_ballots_out_of_the_counted_and_the_uncounted_figures() -> None:
    events: list[tuple[int, Event]] = [
        (1, cast("gone", "ship", "tool-a")),
        (2, cast("gone", "skip", "tool-b", "c-2")),
        (3, cast("stays", "skip", "tool-a")),
        (4, forget("gone")),
    ]
    ballots, counted = fold_all([events])
    assert counted == {("a-vs-b", "tool-a"): [0, 1]}
    assert uncounted([events]) == {}, "a void would leave them uncounted; a forget leaves nothing"
    assert ballots[("a-vs-b", "tool-a", "gone")] == Ballot(None, 1, False), "no verdict kept, its own sequence"
    assert ballots[("c-2", "tool-b", "gone")] == Ballot(None, 2, False)
    for cut in range(1, len(events)):
        assert fold_all([events[:cut], events[cut - 1 :], events[2:]])[1] == counted


def test_a_forget_after_a_void_still_erases_and_keeps_the_first_record() -> None:
    events: list[tuple[int, Event]] = [(1, cast("v", "ship")), (2, void("v")), (3, forget("v"))]
    state = FoldState()
    outcome = fold(events, state, ballots_per_client_day=1000)
    assert outcome.voided == {"v": (2, "test")}
    assert outcome.ballots[("a-vs-b", "tool-a", "v")] == Ballot(None, 1, False)
    assert outcome.deltas == {("a-vs-b", "tool-a"): [0, 0, 0, 0]}, "cast and taken out in one batch: no change"
    again = fold(
        [(4, forget("v", 1))], FoldState(ballots=dict(outcome.ballots), voided={"v"}), ballots_per_client_day=9
    )
    assert again.ballots == {}, "a second forget changes nothing"
    assert again.deltas == {}


def test_a_cast_after_the_forget_holds_no_verdict_in_any_order() -> None:
    # A vote admitted just before the forget may be stored after it: it is erased too.
    events: list[tuple[int, Event]] = [(1, cast("v", "ship")), (2, forget("v")), (3, cast("v", "skip", "tool-b"))]
    in_order, counted = fold_all([events])
    assert counted == {}
    assert uncounted([events]) == {}
    assert in_order[("a-vs-b", "tool-b", "v")] == Ballot(None, 3, None), "never counted: no tally row either"
    for order in itertools.permutations(events):
        ballots, counted_then = fold_all([[pair] for pair in order])
        # (Whether a ballot without a verdict would count may differ, as for a retraction: no figure shows it.)
        assert {key: (b.verdict, b.seq) for key, b in ballots.items()} == {
            key: (b.verdict, b.seq) for key, b in in_order.items()
        }
        assert counted_then == {}


def test_a_forget_records_its_voter_as_voided_for_the_projections_that_follow_voids() -> None:
    voided: dict[str, tuple[int, str]] = {}
    state = FoldState()
    fold_into([(1, cast("v", "ship")), (7, forget("v"))], state, voided, ballots_per_client_day=1000)
    assert voided == {"v": (7, FORGOTTEN)}
    assert state.forgotten == {"v": 7}
    assert state.ballots == {("a-vs-b", "tool-a", "v"): Ballot(None, 1, False)}


def test_the_quota_day_is_the_utc_day_of_the_event() -> None:
    from datetime import timedelta, timezone

    from services.tally.fold import utc_day

    assert utc_day(datetime(2026, 11, 23, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == "2026-11-24"
    assert utc_day(datetime(2026, 11, 23, 0, 0, tzinfo=UTC)) == "2026-11-23"
