"""Each comparison's counts at a position, and the rules that keep a read view's copy of them right. Pure.

A standing at position P holds every event up to P, so two standings of one comparison at the same position
are equal, and the one at the higher position is the newer. Change notices and reloads are merged by that rule,
so a notice applied while a reload was reading is never undone by the older snapshot.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from contracts.notices import TallyChanged

ToolCounts = Mapping[str, tuple[int, int]]
"""tool_id -> (ship, skip), counted ballots only; a tool not listed has none."""


@dataclass(frozen=True, slots=True)
class Standing:
    position: int
    """The position of the last batch that changed the comparison (0: never changed)."""
    counts: ToolCounts = field(default_factory=dict)


NO_BALLOTS = Standing(0)


def standing_of(notice: TallyChanged) -> Standing:
    return Standing(notice.position, {tool.tool_id: (tool.ship, tool.skip) for tool in notice.tools})


def newer_than(candidate: Standing, held: Standing | None) -> bool:
    """Whether a notice's standing should replace the one held (same position: same batch, nothing new)."""
    return held is None or candidate.position > held.position


def merge_snapshot(held: Mapping[str, Standing], snapshot: Mapping[str, Standing]) -> dict[str, Standing]:
    """The standings a reload changes: the snapshot's, except where the view holds a newer one from a notice.

    At equal positions the snapshot wins: it is what Postgres holds now (a rebuild may have recounted).
    """
    changed: dict[str, Standing] = {}
    for comparison_id in held.keys() | snapshot.keys():
        mine = held.get(comparison_id)
        theirs = snapshot.get(comparison_id, NO_BALLOTS)
        if mine is not None and mine.position > theirs.position:
            continue
        if mine != theirs:
            changed[comparison_id] = theirs
    return changed


class NoticeChain:
    """Per projector partition, the last batch position a view has seen; says when notices were missed
    (``previous`` is not it). Partitions commit independently, so each has a chain of its own."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}

    @property
    def position(self) -> int:
        """The last batch position seen of any partition."""
        return max(self.positions.values(), default=0)

    def observe(self, position: int, previous: int, partition: str = "tally") -> bool:
        """Take in a notice's positions; True when some batch of its partition before it was never seen."""
        seen = self.positions.get(partition, 0)
        if position <= seen:
            return False  # another comparison of a batch seen already, or a batch a reload covered
        self.positions[partition] = position
        return previous != seen

    def reloaded(self, positions: int | Mapping[str, int]) -> None:
        """A reload saw every partition's batches up to these positions (a bare number: the unpartitioned
        chain); a notice may have taken a chain further meanwhile."""
        if isinstance(positions, int):
            positions = {"tally": positions}
        for partition, position in positions.items():
            self.positions[partition] = max(self.positions.get(partition, 0), position)
