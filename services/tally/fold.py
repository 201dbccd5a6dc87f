"""The fold: how a batch of events changes ballots and tallies. Pure; no I/O, no clock.

Each ballot keeps the stream sequence of the event that set it, and an event whose sequence is not newer than
the ballot's changes nothing. So redelivered, duplicated or reordered events give the same result as one clean
pass in order, and a replay of the stream decides exactly what the live projector decided.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from contracts.events import Event, VoteCast

BallotKey = tuple[str, str, str]
"""(comparison_id, tool_id, voter_id)"""
TallyKey = tuple[str, str]
"""(comparison_id, tool_id)"""


class Ballot(NamedTuple):
    verdict: str | None
    """"ship", "skip", or None once retracted."""
    seq: int


def ballot_key(event: Event) -> BallotKey:
    return (event.comparison_id, event.tool_id, event.voter_id)


@dataclass
class FoldOutcome:
    ballots: dict[BallotKey, Ballot] = field(default_factory=dict)
    """Ballots that changed, with their new state."""
    deltas: dict[TallyKey, list[int]] = field(default_factory=dict)
    """Per tool, the change of [ship, skip]."""

    def comparisons(self) -> set[str]:
        return {comparison_id for comparison_id, _ in self.deltas}


def fold(events: Iterable[tuple[int, Event]], current: Mapping[BallotKey, Ballot]) -> FoldOutcome:
    """Apply ``(seq, event)`` pairs to the ballots ``current`` holds (only the keys the events touch matter)."""
    outcome = FoldOutcome()
    for seq, event in sorted(events, key=lambda pair: pair[0]):
        key = ballot_key(event)
        before = outcome.ballots.get(key) or current.get(key)
        if before is not None and before.seq >= seq:
            continue  # already applied, or older than what set the ballot
        verdict = event.verdict if isinstance(event, VoteCast) else None
        outcome.ballots[key] = Ballot(verdict, seq)
        old = before.verdict if before is not None else None
        if old == verdict:
            continue
        delta = outcome.deltas.setdefault((event.comparison_id, event.tool_id), [0, 0])
        if old is not None:
            delta[0 if old == "ship" else 1] -= 1
        if verdict is not None:
            delta[0 if verdict == "ship" else 1] += 1
    return outcome
