"""Properties of the pure fold (services/tally/fold.py), for random streams of casts, changes of mind,
retractions and voids, under the counting policy.

- One clean pass gives what an independent model of the rules gives (tallies and ballots).
- Any at-least-once delivery (batches cut anywhere, redelivered from an earlier point, duplicated, shuffled inside
  a batch, lost to a crash before the commit) gives the same tallies and ballots as the clean pass, also when each
  batch is given only the state the store would read for it (the keys it touches), as the projector does.
- Without quota pressure, any order at all gives the same result.
"""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.events import Event, VoteCast, VoterForgotten, VoterVoided
from services.tally.fold import (
    FORGOTTEN,
    Ballot,
    BallotKey,
    Counts,
    FoldOutcome,
    FoldState,
    ballot_keys,
    fold,
    fold_into,
    quota_key,
)
from tests.property.model import Model, Tallies, draw_deliveries, nonzero, streams

limits = st.integers(min_value=1, max_value=3)


class Store:
    """What Postgres holds for the fold, kept in memory: ballots, quotas, voids, summed tallies."""

    def __init__(self) -> None:
        self.ballots: dict[BallotKey, Ballot] = {}
        self.quotas: dict[tuple[str, str, str], int] = {}
        self.voided: set[str] = set()
        self.forgotten: dict[str, int] = {}
        self.counts: dict[tuple[str, str], list[int]] = {}

    def state_for(self, events: list[Event]) -> FoldState:
        """Only what services/tally/store.py reads for a batch: the rows the batch's keys select."""
        state = FoldState()
        for key in ballot_keys(events):
            if key in self.ballots:
                state.ballots[key] = self.ballots[key]
        voiding = {e.voter_id for e in events if isinstance(e, VoterVoided | VoterForgotten)}
        state.ballots.update({k: b for k, b in self.ballots.items() if k[2] in voiding})
        state.voided = {e.voter_id for e in events} & self.voided
        state.forgotten = {e.voter_id: self.forgotten[e.voter_id] for e in events if e.voter_id in self.forgotten}
        casts = [event for event in events if isinstance(event, VoteCast)]
        for quota in {quota_key(cast) for cast in casts}:
            if quota is not None and quota in self.quotas:
                state.quotas[quota] = self.quotas[quota]
        return state

    def commit(self, outcome: FoldOutcome) -> None:
        self.ballots.update(outcome.ballots)
        self.quotas.update(outcome.quotas)
        self.voided.update(outcome.voided)
        self.forgotten.update(outcome.forgotten)
        for key, delta in outcome.deltas.items():
            total = self.counts.setdefault(key, [0, 0, 0, 0])
            for i, change in enumerate(delta):
                total[i] += change

    def tallies(self) -> Tallies:
        return nonzero({key: Counts(*values) for key, values in self.counts.items()})


def cut_anywhere(stream: list[Event], data: st.DataObject) -> list[list[tuple[int, Event]]]:
    """The stream's (seq, event) pairs in batches cut where hypothesis draws."""
    cuts = sorted(data.draw(st.sets(st.integers(min_value=1, max_value=max(1, len(stream) - 1)))))
    pairs = list(enumerate(stream, start=1))
    return [pairs[start:end] for start, end in itertools.pairwise([0, *cuts, len(stream)])]


def clean_pass(stream: list[Event], limit: int) -> Store:
    store = Store()
    store.commit(fold(list(enumerate(stream, start=1)), FoldState(), ballots_per_client_day=limit))
    return store


@settings(max_examples=300)
@given(stream=streams(), limit=limits)
def test_one_clean_pass_gives_what_the_model_gives(stream: list[Event], limit: int) -> None:
    store = clean_pass(stream, limit)
    model = Model(limit).run(stream)
    assert store.tallies() == model.tallies()
    assert store.ballots == model.ballots
    # No tally ever goes negative, and a row counts exactly the ballots that hold its verdict.
    assert all(min(counts) >= 0 for counts in store.tallies().values())


@settings(max_examples=300)
@given(stream=streams(), limit=limits, data=st.data())
def test_one_state_absorbing_batch_after_batch_gives_the_clean_pass(
    stream: list[Event], limit: int, data: st.DataObject
) -> None:
    # As a rebuild's first pass and verify fold: the whole state in memory, a void finding ballots by its index.
    clean = clean_pass(stream, limit)
    state = FoldState()
    for batch in cut_anywhere(stream, data):
        state.absorb(fold(batch, state, ballots_per_client_day=limit))
    assert state.ballots == clean.ballots
    assert state.quotas == clean.quotas
    assert state.voided == clean.voided
    assert state.forgotten == clean.forgotten
    for voter in {key[2] for key in clean.ballots}:
        assert state.keys_of_voter(voter) == {key for key in clean.ballots if key[2] == voter}


@settings(max_examples=300)
@given(stream=streams(), limit=limits, data=st.data())
def test_folding_into_the_state_batch_after_batch_gives_the_clean_pass(
    stream: list[Event], limit: int, data: st.DataObject
) -> None:
    # A rebuild's first pass: the state changed in place, no outcome per batch.
    clean = clean_pass(stream, limit)
    state = FoldState()
    voided: dict[str, tuple[int, str]] = {}
    for batch in cut_anywhere(stream, data):
        fold_into(batch, state, voided, ballots_per_client_day=limit)
    assert state.ballots == clean.ballots
    assert state.quotas == clean.quotas
    assert set(voided) == clean.voided
    pairs = list(enumerate(stream, start=1))
    first: dict[str, tuple[int, str]] = {}  # each voter's first void or forget is the record kept
    for seq, e in pairs:
        if isinstance(e, VoterVoided | VoterForgotten) and e.voter_id not in first:
            first[e.voter_id] = (seq, e.reason if isinstance(e, VoterVoided) else FORGOTTEN)
    assert voided == first
    forgotten: dict[str, int] = {}
    for seq, e in pairs:
        if isinstance(e, VoterForgotten):
            forgotten.setdefault(e.voter_id, seq)
    assert state.forgotten == forgotten
    for voter in {key[2] for key in clean.ballots}:
        assert state.keys_of_voter(voter) == {key for key in clean.ballots if key[2] == voter}


@settings(max_examples=300)
@given(stream=streams(), limit=limits, data=st.data())
def test_any_at_least_once_delivery_gives_the_clean_result(
    stream: list[Event], limit: int, data: st.DataObject
) -> None:
    clean = clean_pass(stream, limit)
    store = Store()
    for delivery in draw_deliveries(data, len(stream), crashes=True):
        batch = [(seq, stream[seq - 1]) for seq in delivery.seqs]
        outcome = fold(batch, store.state_for([event for _, event in batch]), ballots_per_client_day=limit)
        if delivery.commits:
            store.commit(outcome)
    assert store.tallies() == clean.tallies()
    assert store.ballots == clean.ballots
    assert store.voided == clean.voided
    assert store.forgotten == clean.forgotten
    assert store.quotas == clean.quotas


@settings(max_examples=200)
@given(stream=streams(max_size=40), data=st.data())
def test_without_quota_pressure_any_order_and_any_repetition_gives_the_clean_result(
    stream: list[Event], data: st.DataObject
) -> None:
    limit = len(stream) + 1  # the quota never binds: the only order-dependent rule is out of play
    clean = clean_pass(stream, limit)
    numbered = list(enumerate(stream, start=1))
    repeated = data.draw(st.lists(st.sampled_from(numbered), max_size=len(stream)), label="repeated")
    delivered = data.draw(st.permutations(numbered + repeated), label="delivered")
    cuts = data.draw(st.lists(st.integers(0, len(delivered)), max_size=8), label="cuts")
    bounds = [0, *sorted(cuts), len(delivered)]
    store = Store()
    for start, end in itertools.pairwise(bounds):
        batch = delivered[start:end]
        store.commit(fold(batch, store.state_for([event for _, event in batch]), ballots_per_client_day=limit))
    assert store.tallies() == clean.tallies()
    # Each ballot ends with the verdict of its latest event. (Whether a ballot holding no verdict *would* count
    # may differ: a retraction folded before the cast it follows leaves it undecided. Stream order never does
    # that, and the next cast decides it the same way while the quota does not bind.)
    assert {k: (b.verdict, b.seq) for k, b in store.ballots.items()} == {
        k: (b.verdict, b.seq) for k, b in clean.ballots.items()
    }
    assert {k: b.counted for k, b in store.ballots.items() if b.verdict} == {
        k: b.counted for k, b in clean.ballots.items() if b.verdict
    }
