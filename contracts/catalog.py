"""The catalogue: the comparisons that can be voted on, and their tools.

A tool can appear in several comparisons, so tools are listed once and comparisons name two of them. The
catalogue is stored one entry per tool and per comparison (services/shared/catalog_store.py): the bounds below
keep every entry far below NATS's smallest usual max payload, however large the catalogue.
"""

from typing import Annotated

import msgspec
from msgspec import Meta

from contracts.events import Verdict
from contracts.ids import Slug

Count = Annotated[int, Meta(ge=0)]
Text = Annotated[str, Meta(min_length=1, max_length=4000)]
MAX_QUOTES = 20
"""Quotes per tool: with ``Text``'s bound, a tool entry stays under 400 KB even in 4-byte UTF-8."""


class PanelVerdict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the site's expert reviewers voted."""

    ship: Count
    skip: Count


class Quote(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One panel reviewer's words on one tool."""

    verdict: Verdict
    text: Text


class Tool(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Slug
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    pitch: Annotated[str, Meta(min_length=1, max_length=300)]
    """The one-line pitch under the tool's name."""
    entry: Annotated[str, Meta(min_length=1, max_length=60)]
    """The price of entry, as the site shows it ("Free", "$20/mo")."""
    panel: PanelVerdict
    category: Annotated[str, Meta(max_length=100)] = ""
    summary: Annotated[str, Meta(max_length=10_000)] = ""
    quotes: Annotated[list[Quote], Meta(max_length=MAX_QUOTES)] = []


class Comparison(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Slug
    title: Annotated[str, Meta(min_length=1, max_length=300)]
    tools: Annotated[list[Slug], Meta(min_length=2, max_length=2)]
    """Exactly two tool ids, in page order (left, right)."""
    lede: Annotated[str, Meta(max_length=4000)] = ""


class Catalog(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tools: list[Tool]
    comparisons: list[Comparison]


class LoadLock(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A catalogue load in progress: who, since when (the revision of the head that holds it is the generation
    the load writes its entries under)."""

    by: str
    """host:pid of the loader."""
    started: float
    """Unix time."""


class CatalogHead(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The ``head`` key of the CATALOG bucket: the committed generation, and the lock of a load in progress.

    Readers take in a generation's entries when the head names it (services/shared/catalog_store.py).
    """

    generation: int
    """0 until the first load commits."""
    tools: int
    comparisons: int
    changes: int
    """Entries written under ``generation`` (added, changed or removed): what a reader must hold to switch."""
    loading: LoadLock | None = None


class CatalogError(ValueError):
    """A catalogue that cannot be loaded; the message names the line or key at fault."""


_decoder = msgspec.json.Decoder(Catalog)
_encoder = msgspec.json.Encoder()
_head_decoder = msgspec.json.Decoder(CatalogHead)


def encode_catalog(catalog: Catalog) -> bytes:
    return _encoder.encode(catalog)


def encode_head(head: CatalogHead) -> bytes:
    return _encoder.encode(head)


def decode_head(data: bytes) -> CatalogHead:
    return _head_decoder.decode(data)


def decode_catalog(data: bytes) -> Catalog:
    """Decode and check a catalogue; every problem is a CatalogError naming where it is."""
    try:
        catalog = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"invalid catalogue: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CatalogError(f"invalid catalogue JSON: {_with_line(str(exc), data)}") from None
    _check_references(catalog)
    return catalog


def _with_line(message: str, data: bytes) -> str:
    """msgspec names a byte offset ('... at byte 120'); people want a line and column."""
    marker = "byte "
    if marker not in message:
        return message
    try:
        offset = int(message.rsplit(marker, 1)[1].split()[0].rstrip(")."))
    except ValueError:
        return message
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return f"{message} (line {line}, column {column})"


def _check_references(catalog: Catalog) -> None:
    tool_ids: set[str] = set()
    for index, tool in enumerate(catalog.tools):
        if tool.id in tool_ids:
            raise CatalogError(f"invalid catalogue: duplicate tool id {tool.id!r} - at `$.tools[{index}].id`")
        tool_ids.add(tool.id)
    comparison_ids: set[str] = set()
    for index, comparison in enumerate(catalog.comparisons):
        where = f"$.comparisons[{index}]"
        if comparison.id in comparison_ids:
            raise CatalogError(f"invalid catalogue: duplicate comparison id {comparison.id!r} - at `{where}.id`")
        comparison_ids.add(comparison.id)
        left, right = comparison.tools
        if left == right:
            raise CatalogError(f"invalid catalogue: a comparison needs two different tools - at `{where}.tools`")
        for position, tool_id in enumerate(comparison.tools):
            if tool_id not in tool_ids:
                raise CatalogError(f"invalid catalogue: unknown tool {tool_id!r} - at `{where}.tools[{position}]`")
