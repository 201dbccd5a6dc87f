"""The fold: how a batch of events changes ballots and tallies. Pure; no I/O, no clock.

Each ballot keeps the stream sequence of the event that set it, and an event whose sequence is not newer than
the ballot's changes nothing. So redelivered, duplicated or reordered events give the same result as one clean
pass in order, and a replay of the stream decides exactly what the live projector decided.

Two rules decide whether a ballot *counts*, both read from event data only (so a rebuild decides the same):
- the counting policy: at most ``ballots_per_client_day`` new ballots per comparison from one client-address
  hash per UTC day (of the event's time) count; the rest are kept but marked uncounted;
- moderation: once a voter is voided, none of their ballots count, in any comparison, then or later.

A voter who asks to be forgotten (``VoterForgotten``) goes through the very same path as a void (recorded among
the voided with the reason ``FORGOTTEN``, unless voided before), and is also recorded as forgotten: from then on no
ballot of theirs holds a verdict, the ones held before the forget and any that comes later (a cast that raced
it), whatever order the events are folded in. The rows stay (verdict null, uncounted, their own sequence), so that
events older than them still change nothing; the tallies drop them from the counted and the uncounted figures
alike (docs/design.md, "What is kept about a voter").

The fold also lists the *changes* of counted ballots, each with its event's time, for the history projection
(services/tally/history.py): a counted ballot going from ship to skip at time t is one change. A void lists none:
it erases the voter's changes instead (the history takes the voter out of every point, past ones included).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import NamedTuple

from contracts.events import Event, VoteCast, VoteRetracted, VoterEvent, VoterForgotten, VoterVoided

BallotKey = tuple[str, str, str]
"""(comparison_id, tool_id, voter_id)"""
TallyKey = tuple[str, str]
"""(comparison_id, tool_id)"""
QuotaKey = tuple[str, str, str]
"""(comparison_id, client hash, UTC day "YYYY-MM-DD")"""
Change = tuple[BallotKey, datetime, str | None, str | None]
"""A counted ballot's change of verdict: (key, the event's time, verdict before, verdict after)."""

FORGOTTEN = "forgotten at the voter's request"
"""The reason a forget records for its voter among the voided (an operator's void has a reason of its own)."""


class Ballot(NamedTuple):
    verdict: str | None
    """"ship", "skip", or None (retracted, or never cast)."""
    seq: int
    counted: bool | None
    """Whether it counts in the tally; None until its first cast decides it."""


class Counts(NamedTuple):
    """One tool's tally: counted ship and skip, and the ballots kept but not counted."""

    ship: int = 0
    skip: int = 0
    uncounted_ship: int = 0
    uncounted_skip: int = 0


@dataclass
class FoldState:
    """What the fold needs to know before a batch, for the keys the batch touches."""

    ballots: dict[BallotKey, Ballot] = field(default_factory=dict)
    """Current ballots for the batch's (comparison, tool, voter) keys, and every ballot of voters it voids."""
    quotas: dict[QuotaKey, int] = field(default_factory=dict)
    """New ballots already counted per (comparison, client, day)."""
    voided: set[str] = field(default_factory=set)
    """Voters of the batch who were voided before it."""
    forgotten: dict[str, int] = field(default_factory=dict)
    """Voters of the batch who were forgotten before it, with the sequence of their (first) forget."""
    _by_voter: dict[str, set[BallotKey]] | None = field(default=None, repr=False, compare=False)
    """Ballot keys per voter, kept once ``absorb`` is used: a void then finds the voter's ballots without a scan
    of every ballot held (a whole stream's, in a rebuild or verify)."""

    def keys_of_voter(self, voter: str) -> set[BallotKey]:
        if self._by_voter is not None:
            return self._by_voter.get(voter, set())
        return {key for key in self.ballots if key[2] == voter}

    def voter_index(self) -> dict[str, set[BallotKey]]:
        """Ballot keys per voter, built on first use and kept from then on by ``absorb`` and ``fold_into``."""
        if self._by_voter is None:
            self._by_voter = {}
            for key in self.ballots:
                self._by_voter.setdefault(key[2], set()).add(key)
        return self._by_voter

    def absorb(self, outcome: "FoldOutcome") -> None:
        """Take a batch's outcome in, as the tables take its writes: one state then folds a stream batch by batch."""
        by_voter, ballots = self.voter_index(), self.ballots
        for key in outcome.ballots:  # not keys() - keys(): that walks every ballot held, each batch
            if key not in ballots:
                by_voter.setdefault(key[2], set()).add(key)
        self.ballots.update(outcome.ballots)
        self.quotas.update(outcome.quotas)
        self.voided.update(outcome.voided)
        self.forgotten.update(outcome.forgotten)


@dataclass
class FoldOutcome:
    ballots: dict[BallotKey, Ballot] = field(default_factory=dict)
    """Ballots that changed, with their new state."""
    deltas: dict[TallyKey, list[int]] = field(default_factory=dict)
    """Per tool, the change of [ship, skip, uncounted_ship, uncounted_skip]."""
    quotas: dict[QuotaKey, int] = field(default_factory=dict)
    """New values of the quotas the batch used."""
    voided: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Voters voided by this batch: voter -> (seq, reason)."""
    forgotten: dict[str, int] = field(default_factory=dict)
    """Voters forgotten by this batch: voter -> seq."""
    changes: list[Change] = field(default_factory=list)
    """Every change of a counted ballot's verdict, in stream order (voided voters' included: the history drops
    them, with the rest of the voter's changes)."""

    def comparisons(self) -> set[str]:
        return {comparison_id for comparison_id, _ in self.deltas}


def ballot_keys(events: Iterable[Event]) -> set[BallotKey]:
    return {(e.comparison_id, e.tool_id, e.voter_id) for e in events if isinstance(e, VoteCast | VoteRetracted)}


def quota_key(event: VoteCast) -> QuotaKey | None:
    if event.origin.client is None:
        return None
    return (event.comparison_id, event.origin.client, utc_day(event.at))


def utc_day(at: datetime) -> str:
    """The event's UTC day, "YYYY-MM-DD" (date.isoformat is several times cheaper than strftime per event)."""
    if at.tzinfo is not UTC and at.utcoffset():  # decoded "...Z" times carry the UTC singleton: no call for them
        at = at.astimezone(UTC)
    return at.date().isoformat()


def bucket(verdict: str | None, counted: bool | None) -> int | None:
    """Index into a delta vector, or None for a ballot that holds no verdict."""
    if verdict is None:
        return None
    return (0 if verdict == "ship" else 1) + (0 if counted else 2)


_BUCKETS: dict[tuple[str | None, bool | None], int | None] = {
    (verdict, counted): bucket(verdict, counted)
    for verdict in ("ship", "skip", None)
    for counted in (True, False, None)
}
"""``bucket`` of every (verdict, counted) a ballot can hold: one dict lookup per ballot on the fold's path."""


class _Batch:
    def __init__(self, state: FoldState, ballots_per_client_day: int, out: FoldOutcome | None = None) -> None:
        self.state = state
        self.limit = ballots_per_client_day
        self.out = out if out is not None else FoldOutcome()
        # Read for every event (a rebuild folds the whole stream through here): bound once.
        self._ballots_out = self.out.ballots
        self._ballots_in = state.ballots
        self._changes = self.out.changes

    def ballot(self, key: BallotKey) -> Ballot | None:
        return self._ballots_out.get(key) or self._ballots_in.get(key)

    def is_voided(self, voter: str) -> bool:
        return voter in self.out.voided or voter in self.state.voided

    def is_forgotten(self, voter: str) -> bool:
        return voter in self.out.forgotten or voter in self.state.forgotten

    def set_ballot(self, key: BallotKey, before: Ballot | None, after: Ballot) -> None:
        self._ballots_out[key] = after
        old = _BUCKETS[before.verdict, before.counted] if before is not None else None
        new = _BUCKETS[after.verdict, after.counted]
        if old == new:
            return
        delta = self.out.deltas.setdefault((key[0], key[1]), [0, 0, 0, 0])
        if old is not None:
            delta[old] -= 1
        if new is not None:
            delta[new] += 1

    def decide_counted(self, event: VoteCast) -> bool:
        """A ballot's first cast decides whether it counts (and uses up quota if it does)."""
        if self.is_voided(event.voter_id):
            return False
        key = quota_key(event)
        if key is None:
            return True
        used = self.out.quotas.get(key, self.state.quotas.get(key, 0))
        if used >= self.limit:
            return False
        self.out.quotas[key] = used + 1
        return True

    def apply(self, seq: int, event: Event) -> None:
        if isinstance(event, VoterVoided | VoterForgotten):  # a forget is a void asked by the voter
            self.void(seq, event)
            return
        key = (event.comparison_id, event.tool_id, event.voter_id)
        before = self.ballot(key)
        if before is None:
            counted = None
        elif before.seq >= seq:
            return  # already applied, or older than what set the ballot
        else:
            counted = before.counted
        if self.is_forgotten(event.voter_id):
            self.set_ballot(key, before, _erased(seq, counted))  # uncounted: no change for the history
            return
        if isinstance(event, VoteCast):
            if counted is None:
                counted = self.decide_counted(event)
            verdict: str | None = event.verdict
        else:
            verdict = None
        self.set_ballot(key, before, Ballot(verdict, seq, counted))
        if counted:
            old = before.verdict if before is not None else None
            if old != verdict:
                self._changes.append((key, event.at, old, verdict))

    def keys_of_voter(self, voter: str) -> set[BallotKey]:
        """The voter's ballots held before the batch and set by it."""
        return self.state.keys_of_voter(voter) | {k for k in self.out.ballots if k[2] == voter}

    def void(self, seq: int, event: VoterEvent) -> None:
        voter = event.voter_id
        if isinstance(event, VoterForgotten):
            if self.is_forgotten(voter):
                return  # its first forget erased every ballot then, and every one since
            self.out.forgotten[voter] = seq
            erase, reason = True, FORGOTTEN
        else:
            erase, reason = False, event.reason
        if not self.is_voided(voter):
            self.out.voided[voter] = (seq, reason)
        elif not erase:
            return
        # (Voided before and now forgotten: the first void's record stands, and the verdicts go.)
        for key in self.keys_of_voter(voter):
            before = self.ballot(key)
            assert before is not None
            # The ballot keeps its own sequence: later casts by the voter are still ordered against it.
            if erase:
                after = _erased(before.seq, before.counted)
            elif before.counted is not False:
                after = before._replace(counted=False)
            else:
                continue
            if after != before:
                self.set_ballot(key, before, after)


def _erased(seq: int, counted: bool | None) -> Ballot:
    """A forgotten voter's ballot: no verdict, uncounted (or still undecided: never cast, so in no tally row)."""
    return Ballot(None, seq, False if counted else counted)


_new_ballot = tuple.__new__
"""Makes a ``Ballot`` from a tuple of its fields without the Python-level ``__new__`` of a NamedTuple."""


class _InPlace(_Batch):
    """A batch that changes the state itself: its ballots, quotas and forgets are the state's, its voids gather in
    ``voided``, and no tally deltas are kept (whoever folds a whole stream this way counts the ballots at the end)."""

    def __init__(
        self, state: FoldState, ballots_per_client_day: int, voided: dict[str, tuple[int, str]], changes: list[Change]
    ) -> None:
        out = FoldOutcome(
            ballots=state.ballots, quotas=state.quotas, voided=voided, forgotten=state.forgotten, changes=changes
        )
        super().__init__(state, ballots_per_client_day, out)
        self._ballots_in = {}  # the state's ballots are the batch's own: nothing else to look in
        self._by_voter = state.voter_index()

    def set_ballot(self, key: BallotKey, before: Ballot | None, after: Ballot) -> None:
        if before is None:
            self._by_voter.setdefault(key[2], set()).add(key)
        self._ballots_out[key] = after

    def apply(self, seq: int, event: Event) -> None:
        """``_Batch.apply`` with ``ballot`` and ``set_ballot`` written in: a rebuild runs it for every event of the
        stream, where the two calls and the ``Ballot`` made through its Python-level ``__new__`` were a third of
        the fold's time (tests/property/test_fold_properties.py holds it to the clean pass)."""
        if isinstance(event, VoterVoided | VoterForgotten):
            self.void(seq, event)
            return
        key = (event.comparison_id, event.tool_id, event.voter_id)
        ballots = self._ballots_out
        before = ballots.get(key)
        if before is None:
            counted = None
            self._by_voter.setdefault(key[2], set()).add(key)
        elif before[1] >= seq:
            return  # already applied, or older than what set the ballot
        else:
            counted = before[2]
        if self.is_forgotten(event.voter_id):
            ballots[key] = _erased(seq, counted)
            return
        if isinstance(event, VoteCast):
            if counted is None:
                counted = self.decide_counted(event)
            verdict: str | None = event.verdict
        else:
            verdict = None
        ballots[key] = _new_ballot(Ballot, (verdict, seq, counted))
        if counted:
            old = before[0] if before is not None else None
            if old != verdict:
                self._changes.append((key, event.at, old, verdict))

    def keys_of_voter(self, voter: str) -> set[BallotKey]:
        return set(self.state.keys_of_voter(voter))  # the index holds every ballot: no scan of the batch's


def fold_into(
    events: Iterable[tuple[int, Event]],
    state: FoldState,
    voided: dict[str, tuple[int, str]],
    *,
    ballots_per_client_day: int,
    changes: list[Change] | None = None,
) -> None:
    """Apply ``(seq, event)`` pairs to ``state`` itself: what ``state.absorb(fold(...))`` leaves, for folds of a
    whole stream in memory (a rebuild's first pass). Its voids go to ``voided`` (voter -> seq, reason), not to
    ``state.voided``; the changes of counted ballots are appended to ``changes``. It keeps no outcome of the batch
    and no tally deltas: 1,000,000 events fold in about a seventh less time than batch outcomes taken in one by
    one (docs/performance-journal.md)."""
    batch = _InPlace(state, ballots_per_client_day, voided, changes if changes is not None else [])
    apply = batch.apply
    for seq, event in sorted(events, key=itemgetter(0)):
        apply(seq, event)


def fold(
    events: Iterable[tuple[int, Event]], state: FoldState | Mapping[BallotKey, Ballot], *, ballots_per_client_day: int
) -> FoldOutcome:
    """Apply ``(seq, event)`` pairs, in sequence order, to what ``state`` holds."""
    if not isinstance(state, FoldState):
        state = FoldState(ballots=dict(state))
    batch = _Batch(state, ballots_per_client_day)
    apply = batch.apply
    for seq, event in sorted(events, key=itemgetter(0)):
        apply(seq, event)
    return batch.out
