"""What the property tests share: random vote streams, random at-least-once deliveries of them, and an
independent model of what the tallies must be.

The model is written from DESIGN.md's rules, not from services/tally/fold.py: it walks the stream once, in order,
keeping whole ballots (no deltas, no buckets), and counts the tallies from the final ballots at the end.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import strategies as st

from contracts.events import Event, Origin, VoteCast, VoteRetracted, VoterForgotten, VoterVoided
from services.tally.fold import Ballot, BallotKey, Counts, TallyKey

COMPARISONS = ("c-one", "c-two")
TOOLS = ("tool-a", "tool-b")
VOTERS = tuple(f"voter-{i}" for i in range(5))
CLIENTS = (None, "net-1", "net-2")
# Either side of a UTC midnight: the counting policy's quota is per day of the event's own time.
TIMES = (datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC), datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC))

Tallies = dict[TallyKey, Counts]


def _cast(n: int, comparison: str, tool: str, verdict: str, voter: str, at: datetime, client: str | None) -> Event:
    return VoteCast(
        event_id=f"cast-{n}",
        comparison_id=comparison,
        tool_id=tool,
        verdict=verdict,  # type: ignore[arg-type]
        voter_id=voter,
        at=at,
        origin=Origin(widget="https://widgets.example.com", client=client),
    )


def _retract(n: int, comparison: str, tool: str, voter: str, at: datetime, client: str | None) -> Event:
    return VoteRetracted(
        event_id=f"retract-{n}",
        comparison_id=comparison,
        tool_id=tool,
        voter_id=voter,
        at=at,
        origin=Origin(client=client),
    )


def _void(n: int, voter: str, at: datetime) -> Event:
    return VoterVoided(event_id=f"void-{n}", voter_id=voter, reason="property test", at=at)


def _forget(n: int, voter: str, at: datetime) -> Event:
    return VoterForgotten(event_id=f"forget-{n}", voter_id=voter, at=at)


_n = st.integers(0, 10**6)
_cast_events = st.builds(
    _cast,
    _n,
    st.sampled_from(COMPARISONS),
    st.sampled_from(TOOLS),
    st.sampled_from(("ship", "skip")),
    st.sampled_from(VOTERS),
    st.sampled_from(TIMES),
    st.sampled_from(CLIENTS),
)
_retract_events = st.builds(
    _retract,
    _n,
    st.sampled_from(COMPARISONS),
    st.sampled_from(TOOLS),
    st.sampled_from(VOTERS),
    st.sampled_from(TIMES),
    st.sampled_from(CLIENTS),
)
_void_events = st.builds(_void, _n, st.sampled_from(VOTERS), st.sampled_from(TIMES))
_forget_events = st.builds(_forget, _n, st.sampled_from(VOTERS), st.sampled_from(TIMES))

events = st.one_of(_cast_events, _cast_events, _cast_events, _retract_events, _void_events, _forget_events)
"""One event: mostly casts (and so changes of mind), some retractions, a few voids and forgets."""


def streams(max_size: int = 60) -> st.SearchStrategy[list[Event]]:
    """The stream, in order: its events get the sequences 1, 2, 3, ..."""
    return st.lists(events, min_size=1, max_size=max_size)


@dataclass
class Delivery:
    """One batch as the projector receives it, and whether its transaction commits or the process dies first."""

    seqs: list[int]
    commits: bool = True


def draw_deliveries(data: st.DataObject, length: int, *, crashes: bool) -> list[Delivery]:
    """An at-least-once delivery of sequences 1..length, as JetStream and a restarting projector produce it.

    Each batch begins anywhere from the first sequence up to the one after the last committed (a restart
    redelivers from the last ack, which may lag the last commit), reaches at least one new sequence, may carry
    duplicates and arrive shuffled; with ``crashes``, a batch may die before its commit (and is redelivered).
    Every sequence is delivered, and committed, at least once.
    """
    deliveries: list[Delivery] = []
    committed = 0
    while committed < length:
        rewind = data.draw(st.booleans(), label="rewind")
        start = data.draw(st.integers(1, committed + 1), label="start") if rewind else committed + 1
        end = data.draw(st.integers(committed + 1, min(length, committed + 12)), label="end")
        seqs = list(range(start, end + 1))
        duplicates = data.draw(st.lists(st.sampled_from(seqs), max_size=4), label="duplicates")
        seqs = data.draw(st.permutations(seqs + duplicates), label="order") if duplicates or rewind else seqs
        commits = not crashes or data.draw(st.integers(0, 4), label="crash") < 4  # one batch in five dies
        deliveries.append(Delivery(seqs, commits))
        if commits:
            committed = end
    return deliveries


@dataclass
class Model:
    """The rules of DESIGN.md and fold.py's docstring, applied to a whole stream in one clean pass."""

    limit: int
    ballots: dict[BallotKey, Ballot] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)
    used: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def run(self, stream: Sequence[Event]) -> "Model":
        for seq, event in enumerate(stream, start=1):
            self.take(seq, event)
        return self

    def take(self, seq: int, event: Event) -> None:
        if isinstance(event, VoterForgotten):
            # A void asked by the voter, and from then on none of their ballots holds a verdict; one never cast
            # stays undecided. Even a voter voided before.
            self.voided.add(event.voter_id)
            self.forgotten.add(event.voter_id)
            for key, ballot in self.ballots.items():
                if key[2] == event.voter_id:
                    self.ballots[key] = Ballot(None, ballot.seq, None if ballot.counted is None else False)
            return
        if isinstance(event, VoterVoided):
            if event.voter_id not in self.voided:
                self.voided.add(event.voter_id)
                for key, ballot in self.ballots.items():
                    if key[2] == event.voter_id:
                        self.ballots[key] = Ballot(ballot.verdict, ballot.seq, False)
            return
        key = (event.comparison_id, event.tool_id, event.voter_id)
        counted = self.ballots[key].counted if key in self.ballots else None
        if event.voter_id in self.forgotten:
            self.ballots[key] = Ballot(None, seq, None if counted is None else False)
            return
        if isinstance(event, VoteRetracted):
            self.ballots[key] = Ballot(None, seq, counted)
            return
        if counted is None:  # the first cast of this ballot decides whether it ever counts
            counted = self._counts(event)
        self.ballots[key] = Ballot(event.verdict, seq, counted)

    def _counts(self, event: VoteCast) -> bool:
        if event.voter_id in self.voided:
            return False
        if event.origin.client is None:
            return True
        quota = (event.comparison_id, event.origin.client, event.at.date().isoformat())
        if self.used.get(quota, 0) >= self.limit:
            return False
        self.used[quota] = self.used.get(quota, 0) + 1
        return True

    def tallies(self) -> Tallies:
        counts: dict[TallyKey, list[int]] = {}
        for (comparison, tool, _), ballot in self.ballots.items():
            if ballot.verdict is None:
                continue
            index = (0 if ballot.verdict == "ship" else 1) + (0 if ballot.counted else 2)
            counts.setdefault((comparison, tool), [0, 0, 0, 0])[index] += 1
        return {key: Counts(*values) for key, values in counts.items()}


def nonzero(tallies: dict[TallyKey, Counts]) -> Tallies:
    """Tallies without all-zero rows (a row whose every ballot moved away stays in the table at zero)."""
    return {key: counts for key, counts in tallies.items() if counts != Counts()}


# The history: events stamped as the stream orders them (the votes API stamps each when it accepts it), across
# minutes, hours and a UTC midnight.
_START = datetime(2026, 11, 23, 21, 10, 0, tzinfo=UTC)
_STEPS = (0.0, 0.5, 30.0, 59.0, 61.0, 600.0, 3600.0, 7199.0)


@st.composite
def timed_streams(draw: st.DrawFn, max_size: int = 50) -> list[Event]:
    """A stream whose events' times rise (or stay) with their sequence."""
    stream = draw(streams(max_size))
    steps = draw(st.lists(st.sampled_from(_STEPS), min_size=len(stream), max_size=len(stream)))
    timed, at = [], _START
    for event, step in zip(stream, steps, strict=True):
        at += timedelta(seconds=step)
        timed.append(msgspec.structs.replace(event, at=at))
    return timed


def history_at(stream: Sequence[Event], limit: int, end: datetime) -> dict[TallyKey, tuple[int, int]]:
    """Counted (ship, skip) per tool as they stood before ``end``: the model over the events stamped before it,
    without any ballot of a voter voided or forgotten anywhere in the stream (either erases the voter from past
    figures too)."""
    erased = {event.voter_id for event in stream if isinstance(event, VoterVoided | VoterForgotten)}
    model = Model(limit).run([event for event in stream if event.at < end])
    counts: dict[TallyKey, tuple[int, int]] = {}
    for (comparison, tool, voter), ballot in model.ballots.items():
        if voter in erased or not ballot.counted or ballot.verdict is None:
            continue
        ship, skip = counts.get((comparison, tool), (0, 0))
        counts[(comparison, tool)] = (ship + (ballot.verdict == "ship"), skip + (ballot.verdict == "skip"))
    return counts
