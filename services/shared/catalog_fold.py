"""The catalogue's keys in the CATALOG bucket, and the fold that makes a catalogue of its messages. Pure: no I/O.

Keys:
- ``tool.<id>.<generation>``, ``comparison.<id>.<generation>``: one version of one entry, written once by the load
  of that generation and never changed: the entry's JSON (contracts/catalog.py), or ``null`` where that load
  removed the entry.
- ``head``: the committed generation and its counts (``CatalogHead``); a load in progress holds it as its lock.
- ``current``: the whole catalogue in one value, as earlier releases stored it (so never more than NATS's max
  payload). Readers fall back to it while no generation was ever committed; ``shipskip migrate``, the local
  stack's bootstrap and the next load convert it to entries and remove it.

Readers (``CatalogFold``) take the bucket's messages in stream order from one watch. A version newer than the
head waits until a head names its generation, then the whole generation is taken in at once: a page never sees
half a load. Every version of a generation is stored before the head that commits it, so a reader holds them all
when it sees that head; the head's counts check it (``CatalogOutOfStep`` otherwise: read everything again).
A reader that starts from scratch takes, for each entry, its newest version at or below the head: versions above
the head belong to a load still running (or one that died, whose versions the next load purges before it writes).
"""

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import msgspec

from contracts.catalog import Catalog, CatalogError, CatalogHead, Comparison, Tool, decode_catalog, decode_head
from contracts.subjects import CATALOG_KEY

log = logging.getLogger(__name__)

HEAD_KEY = "head"
LEGACY_KEY = CATALOG_KEY


class Kind(StrEnum):
    TOOL = "tool"
    COMPARISON = "comparison"


EntryKey = tuple[Kind, str]
Entry = Tool | Comparison
_E = TypeVar("_E", Tool, Comparison)

_encoder = msgspec.json.Encoder()
_decoders: dict[Kind, msgspec.json.Decoder[Tool | None] | msgspec.json.Decoder[Comparison | None]] = {
    Kind.TOOL: msgspec.json.Decoder(Tool | None),
    Kind.COMPARISON: msgspec.json.Decoder(Comparison | None),
}


def version_key(kind: Kind, entry_id: str, generation: int) -> str:
    return f"{kind}.{entry_id}.{generation}"


def parse_version_key(key: str) -> tuple[Kind, str, int] | None:
    """(kind, id, generation) of a version key; None for any other key. Slugs hold no dots."""
    kind, _, rest = key.partition(".")
    entry_id, _, generation = rest.partition(".")
    if kind not in (Kind.TOOL, Kind.COMPARISON) or not entry_id or not generation.isdigit():
        return None
    return Kind(kind), entry_id, int(generation)


def encode_entry(entry: Entry | None) -> bytes:
    return _encoder.encode(entry)


def decode_entry(kind: Kind, data: bytes) -> Entry | None:
    return _decoders[kind].decode(data)


class CatalogOutOfStep(Exception):
    """What a reader holds does not add up to what the head names (a message missed): read everything again."""


@dataclass
class Committed:
    """What a commit (or a reader's first read) changed: each entry's new value, None where it is gone."""

    revision: int
    tools: dict[str, Tool | None] = field(default_factory=dict)
    comparisons: dict[str, Comparison | None] = field(default_factory=dict)


class CatalogFold:
    """The catalogue as the bucket's messages, taken in stream order, make it.

    ``track_versions``: also remember which version keys exist and which are removal markers (a load needs them
    to purge what it supersedes; services do not).
    """

    def __init__(self, *, track_versions: bool = False) -> None:
        self.head: CatalogHead | None = None
        self.head_revision = 0
        """The KV revision of the last ``head`` message: a load's compare-and-set is against it."""
        self.legacy: Catalog | None = None
        self.legacy_revision = 0
        self.tools: dict[str, Tool] = {}
        self.comparisons: dict[str, Comparison] = {}
        self.undecodable = 0
        self._pending: dict[int, dict[EntryKey, Entry | None]] = {}
        self._track = track_versions
        self.versions: dict[EntryKey, set[int]] = {}
        self.markers: set[tuple[Kind, str, int]] = set()

    @property
    def committed(self) -> int:
        """The committed generation; 0 before the first load."""
        return self.head.generation if self.head is not None else 0

    @property
    def revision(self) -> int:
        """What readers call the catalogue's revision: the committed generation, else the old key's revision."""
        if self.committed:
            return self.committed
        return self.legacy_revision if self.legacy is not None else 0

    def catalog(self) -> Catalog:
        """The committed catalogue, entries in id order."""
        return Catalog(
            tools=[self.tools[key] for key in sorted(self.tools)],
            comparisons=[self.comparisons[key] for key in sorted(self.comparisons)],
        )

    def take(self, key: str, value: bytes | None, revision: int, removed: bool) -> Committed | None:
        """One message of the bucket; what it commits, if anything."""
        if key == HEAD_KEY:
            if removed:
                raise CatalogOutOfStep("the catalogue head was deleted")
            self.head_revision = revision
            head = decode_head(value or b"")
            if head.loading is not None:
                # A load took the lock: it writes under this revision, so versions between the committed head and
                # it belong to a load that died before committing; it purges them, but without a marker.
                for generation in [g for g in self._pending if head.generation < g < revision]:
                    del self._pending[generation]
            return self._on_head(head)
        if key == LEGACY_KEY:
            return self._on_legacy(None if removed else value, revision)
        parsed = parse_version_key(key)
        if parsed is None:
            return None
        kind, entry_id, generation = parsed
        if removed:
            self._forget(kind, entry_id, generation)
            return None
        try:
            entry = decode_entry(kind, value or b"null")
        except msgspec.DecodeError as exc:  # a newer release's entry, or damage: the rest stays usable
            self.undecodable += 1
            log.warning("catalogue entry %s cannot be read (%s); left out", key, exc)
            return None
        if self._track:
            self.versions.setdefault((kind, entry_id), set()).add(generation)
            if entry is None:
                self.markers.add((kind, entry_id, generation))
        if generation > self.committed or self.head is None:
            self._pending.setdefault(generation, {})[(kind, entry_id)] = entry
        # else: a version at or below the committed head, seen after it: one the head already accounted for.
        return None

    def _forget(self, kind: Kind, entry_id: str, generation: int) -> None:
        pending = self._pending.get(generation)
        if pending is not None:
            pending.pop((kind, entry_id), None)
        if self._track:
            self.versions.get((kind, entry_id), set()).discard(generation)
            self.markers.discard((kind, entry_id, generation))

    def _on_legacy(self, value: bytes | None, revision: int) -> Committed | None:
        if value is None:
            self.legacy, self.legacy_revision = None, 0
            return None
        try:
            self.legacy = decode_catalog(value)
        except CatalogError as exc:
            log.warning("the old single-key catalogue cannot be read: %s", exc)
            return None
        self.legacy_revision = revision
        if self.committed:
            return None  # superseded by the entries; the next load or `shipskip migrate` removes it
        return self._replace({t.id: t for t in self.legacy.tools}, {c.id: c for c in self.legacy.comparisons}, revision)

    def _on_head(self, head: CatalogHead) -> Committed | None:
        before = self.committed
        if self.head is not None and head.generation < before:
            raise CatalogOutOfStep(f"the catalogue head went back from {before} to {head.generation}")
        self.head = head
        if head.generation == before or head.generation == 0:
            return None  # a lock taken or released: nothing committed
        if before == 0:
            # A first read (or the first commit after the old single key): for each entry, its newest version at or
            # below the head; everything else that was held is gone.
            newest: dict[EntryKey, tuple[int, Entry | None]] = {}
            for generation in sorted(g for g in self._pending if g <= head.generation):
                for entry_key, entry in self._pending.pop(generation).items():
                    newest[entry_key] = (generation, entry)
            tools = {i: e for (k, i), (_, e) in newest.items() if k is Kind.TOOL and isinstance(e, Tool)}
            comparisons = {
                i: e for (k, i), (_, e) in newest.items() if k is Kind.COMPARISON and isinstance(e, Comparison)
            }
            committed = self._replace(tools, comparisons, head.generation)
        else:
            written = self._pending.pop(head.generation, {})
            for generation in [g for g in self._pending if g < head.generation]:
                del self._pending[generation]  # a load that died before it committed
            if len(written) != head.changes:
                raise CatalogOutOfStep(
                    f"generation {head.generation} names {head.changes} entries, {len(written)} arrived"
                )
            committed = Committed(head.generation)
            for (kind, entry_id), entry in written.items():
                if kind is Kind.TOOL:
                    self._set(self.tools, committed.tools, entry_id, entry if isinstance(entry, Tool) else None)
                else:
                    self._set(
                        self.comparisons,
                        committed.comparisons,
                        entry_id,
                        entry if isinstance(entry, Comparison) else None,
                    )
        if (len(self.tools), len(self.comparisons)) != (head.tools, head.comparisons) and not self.undecodable:
            raise CatalogOutOfStep(
                f"generation {head.generation} has {head.tools} tools and {head.comparisons} comparisons;"
                f" {len(self.tools)} and {len(self.comparisons)} held"
            )
        return committed

    @staticmethod
    def _set(held: dict[str, _E], changes: dict[str, _E | None], entry_id: str, entry: _E | None) -> None:
        if entry is None:
            if held.pop(entry_id, None) is not None:
                changes[entry_id] = None
        elif held.get(entry_id) != entry:
            held[entry_id] = entry
            changes[entry_id] = entry

    def _replace(self, tools: dict[str, Tool], comparisons: dict[str, Comparison], revision: int) -> Committed:
        committed = Committed(revision, _changes(self.tools, tools), _changes(self.comparisons, comparisons))
        self.tools, self.comparisons = tools, comparisons
        return committed


def _changes(old: dict[str, _E], new: dict[str, _E]) -> dict[str, _E | None]:
    changes: dict[str, _E | None] = {key: None for key in old.keys() - new.keys()}
    for key, entry in new.items():
        if old.get(key) != entry:
            changes[key] = entry
    return changes
