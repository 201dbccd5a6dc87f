"""The history projection: each tool's counted ship and skip as they stood at any minute.

Kept beside the tallies, in the same transaction, from the fold's list of changes of counted ballots
(``FoldOutcome.changes``):

- ``tally_history``: per (comparison, tool, minute) the net change of counted ship and skip stamped in that
  minute (the event's ``at``). A figure as it stood at a time is the sum of the rows before it.
- ``ballots.history``: per ballot, the same changes as entries (``entry``), so that a void can take exactly that
  voter's changes out of every minute they touched, past minutes included, and then drop them: the history
  never counts a voided voter, as the live figure does not. The column is null on every ballot that does not
  count (never counted, or voided: erasure leaves nothing of it).

The resolution is the minute: a point at time E sums the changes stamped before E, E a whole minute.
"""

from collections.abc import Container, Iterable
from datetime import UTC, datetime

from services.tally.fold import BallotKey, Change

HistoryKey = tuple[str, str, int]
"""(comparison_id, tool_id, minute since the Unix epoch)"""
Entries = int | list[int]
"""A ballot's entries: most ballots hold one, kept as a plain int (a rebuild holds millions in memory)."""


_EPOCH_DAY = 719163
"""``date(1970, 1, 1).toordinal()``"""


def minute_of(at: datetime) -> int:
    """Whole minutes since the Unix epoch, UTC (floored)."""
    if at.tzinfo is UTC:  # decoded "...Z" times: from the fields, twice as fast as timestamp() (per change)
        return (at.toordinal() - _EPOCH_DAY) * 1440 + at.hour * 60 + at.minute
    return int(at.timestamp() // 60)


def time_of(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, UTC)


def entry(minute: int, ship: int, skip: int) -> int:
    """One change of one ballot as a single bigint: each delta is -1, 0 or 1."""
    return minute * 9 + (ship + 1) * 3 + (skip + 1)


def unpack(value: int) -> tuple[int, int, int]:
    """(minute, ship, skip) of an ``entry``."""
    minute, rest = divmod(value, 9)
    return minute, rest // 3 - 1, rest % 3 - 1


_SHIP = {"ship": 1, "skip": 0, None: 0}
_SKIP = {"ship": 0, "skip": 1, None: 0}
_VERDICTS = ("ship", "skip", None)
_DELTAS = {
    (old, new): (
        _SHIP[new] - _SHIP[old],
        _SKIP[new] - _SKIP[old],
        entry(0, _SHIP[new] - _SHIP[old], _SKIP[new] - _SKIP[old]),
    )
    for old in _VERDICTS
    for new in _VERDICTS
}
"""(verdict before, after) -> (ship delta, skip delta, the entry's part past the minute): one lookup a change."""


class HistoryBatch:
    """What a batch (or a rebuild's whole first pass) adds to the history: entries per ballot, sums per minute."""

    __slots__ = ("entries", "minutes")

    def __init__(self) -> None:
        self.entries: dict[BallotKey, Entries] = {}
        self.minutes: dict[HistoryKey, list[int]] = {}

    def add(self, changes: Iterable[Change], erased: Container[str]) -> None:
        """Take the fold's changes in, but none of the ``erased`` voters'."""
        entries, minutes, deltas = self.entries, self.minutes, _DELTAS
        for key, at, old, new in changes:  # a rebuild runs every change of the stream through here
            if key[2] in erased:
                continue
            minute = minute_of(at)
            ship, skip, code = deltas[old, new]
            value = minute * 9 + code
            held = entries.get(key)
            if held is None:
                entries[key] = value
            elif held.__class__ is int:
                entries[key] = [held, value]
            else:
                held.append(value)  # type: ignore[union-attr]
            total = minutes.get((key[0], key[1], minute))
            if total is None:
                minutes[(key[0], key[1], minute)] = [ship, skip]
            else:
                total[0] += ship
                total[1] += skip

    def erase(self, histories: Iterable[tuple[str, str, Entries]]) -> None:
        """Take ballots' recorded entries out of the sums: (comparison, tool, entries) of each erased ballot."""
        minutes = self.minutes
        for comparison_id, tool_id, values in histories:
            for value in as_list(values):
                minute, ship, skip = unpack(value)
                total = minutes.setdefault((comparison_id, tool_id, minute), [0, 0])
                total[0] -= ship
                total[1] -= skip

    def minute_rows(self) -> list[tuple[str, str, int, int, int]]:
        return [(c, t, m, ship, skip) for (c, t, m), (ship, skip) in self.minutes.items() if ship or skip]


def as_list(values: Entries) -> list[int]:
    return [values] if isinstance(values, int) else values


def literal(values: Entries | None) -> str | None:
    """A Postgres array literal of entries (``unnest`` cannot take an array of arrays)."""
    if values is None:
        return None
    if isinstance(values, int):
        return f"{{{values}}}"
    return "{" + ",".join(map(str, values)) + "}"
