"""Which projector partition folds which comparison: FNV-1a (32 bit) of the comparison id, modulo N.

``SHIPSKIP_PARTITIONS`` (N) splits the comparisons between N partitions; each is folded by its own durable consumer
and has its own position row, both named after it (``tally`` when N is 1, as before partitioning; else
``tally-<i>-of-<N>``), so a partition resumes from Postgres whatever process folds it.

The function is nats-server's own ``{{partition(N,1)}}`` (tests/integration/test_partitions.py checks it against
the server), which the stream's routing uses to store each event under its partition's subject, so that each
consumer receives only its own (services/tally/routing.py). The projector still decides from the comparison in
each subject, never from the routing: events stored before any routing keep their subject ``votes.v1.<comparison>``
and fold as they always did; moderation (``votes.v1._moderation``) belongs to every partition; and a consumer that
reads every event (no routing, or a routing by another N) folds exactly its partition's. Why the routing is not
the only mechanism: it fixes the partition into each subject once, with the N of that moment, and leaves the
events stored before it without one; a filter listing each partition's comparison subjects instead would depend
on the catalogue, which changes live, and could let a new comparison's first votes slip past every partition.
"""

import re
from dataclasses import dataclass, field

from contracts.subjects import MODERATION_SUBJECT, TALLY_CONSUMER, comparison_of_subject
from services.shared.config import ConfigError

MODERATION_TOKEN = comparison_of_subject(MODERATION_SUBJECT)
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
PARTITION_NAME = re.compile(r"tally-(\d+)-of-(\d+)")


def fnv1a_32(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def partition_of(comparison_id: str, partitions: int) -> int:
    return fnv1a_32(comparison_id.encode()) % partitions


def partition_name(index: int, count: int) -> str:
    """The partition's consumer and position-row name; ``tally`` unpartitioned, so N=1 is what it always was."""
    return TALLY_CONSUMER if count == 1 else f"tally-{index}-of-{count}"


def layout_of(name: str) -> int | None:
    """The partition count a position-row name belongs to (None: not a projector partition's row)."""
    if name == TALLY_CONSUMER:
        return 1
    match = PARTITION_NAME.fullmatch(name)
    return int(match.group(2)) if match else None


def layout_names(count: int) -> list[str]:
    return [partition_name(index, count) for index in range(count)]


@dataclass(frozen=True)
class Partition:
    index: int
    count: int
    _owners: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    """Subjects seen, and whether this partition owns them (a comparison's hash is worked out once)."""

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} is not one of 0..{self.count - 1}")

    @property
    def name(self) -> str:
        return partition_name(self.index, self.count)

    def owns_comparison(self, comparison_id: str) -> bool:
        return self.count == 1 or partition_of(comparison_id, self.count) == self.index

    def owns(self, subject: str) -> bool:
        """Whether this partition folds a message on ``subject``: its comparisons', and every void."""
        owned = self._owners.get(subject)
        if owned is None:
            comparison_id = comparison_of_subject(subject)  # routed or not
            owned = comparison_id == MODERATION_TOKEN or self.owns_comparison(comparison_id)
            if len(self._owners) < 100_000:  # subjects are comparisons (a catalogue); stay bounded regardless
                self._owners[subject] = owned
        return owned


UNPARTITIONED = Partition(0, 1)


class LayoutMismatch(ConfigError):
    """The projection was folded in another number of partitions than this projector's SHIPSKIP_PARTITIONS."""


class PartitionGone(ConfigError):
    """This projector's partition no longer exists: a rebuild re-partitioned the projection while it ran."""

    def __init__(self, partition: Partition) -> None:
        super().__init__(
            f"partition {partition.name} no longer exists (a rebuild re-partitioned the projection):"
            f" SHIPSKIP_PARTITIONS={partition.count} is out of date; stopping rather than folding twice"
        )
