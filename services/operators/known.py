"""Which comparison and tool ids an operator command may name.

A comparison is known when the catalogue lists it, the projection holds ballots or tallies of it, or the stream
holds events of it. So one taken out of the catalogue after people voted on it can still be verified, rebuilt
and looked into (its votes are still in the stream and its rows in the tables), and one whose first events the
projector has not folded yet is known too. An id known nowhere is a typo: commands refuse it rather than report
success on nothing.
"""

import re

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.ids import SLUG_PATTERN
from contracts.subjects import VOTES_STREAM, VOTES_SUBJECT_PREFIX, votes_subject
from services.shared.catalog_store import read_catalog

_SLUG = re.compile(SLUG_PATTERN)


class UnknownId(LookupError):
    """An id that names nothing (CLI: exit 2; admin API: 404)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        """"comparison", "tool", "voter" or "dead_letter": the API's error is ``unknown_<kind>``."""


class InvalidId(ValueError):
    """Not even the shape of an id (CLI: exit 2; admin API: 422)."""


def comparison_subjects(comparison_id: str) -> list[str]:
    """The subjects a comparison's votes are stored under: as published, or routed (services/tally/routing.py)."""
    return [votes_subject(comparison_id), VOTES_SUBJECT_PREFIX + "*.*." + comparison_id]


def check_slug(kind: str, value: str) -> str:
    # Ids go into NATS subject filters: a wildcard ('*', '>') or a '.' there would match other comparisons.
    if not _SLUG.fullmatch(value):
        raise InvalidId(f"{value[:80]!r} is not a {kind} id (lowercase letters, digits and hyphens)")
    return value


async def require_comparison(js: JetStreamContext, pool: asyncpg.Pool, comparison_id: str) -> None:
    """Return if the comparison is known (see the module's docstring); raise UnknownId or InvalidId if not."""
    check_slug("comparison", comparison_id)
    catalog, _ = await read_catalog(js)
    if catalog is not None and any(c.id == comparison_id for c in catalog.comparisons):
        return
    in_tables = await pool.fetchval(
        "select exists (select 1 from tallies where comparison_id = $1)"
        " or exists (select 1 from ballots where comparison_id = $1)",
        comparison_id,
    )
    if in_tables or await _events_in_stream(js, comparison_id):
        return
    raise UnknownId(
        "comparison",
        f"no comparison {comparison_id!r}: not in the catalogue, no ballots, no events in the stream",
    )


async def tool_known(js: JetStreamContext, pool: asyncpg.Pool, comparison_id: str, tool_id: str) -> bool:
    """Whether the catalogue or the projection knows this tool in this comparison (events are not looked at)."""
    check_slug("tool", tool_id)
    catalog, _ = await read_catalog(js)
    if catalog is not None and any(c.id == comparison_id and tool_id in c.tools for c in catalog.comparisons):
        return True
    return bool(
        await pool.fetchval(
            "select exists (select 1 from ballots where comparison_id = $1 and tool_id = $2)", comparison_id, tool_id
        )
    )


async def _events_in_stream(js: JetStreamContext, comparison_id: str) -> bool:
    for subject in comparison_subjects(comparison_id):
        try:
            info = await js.stream_info(VOTES_STREAM, subjects_filter=subject)
        except NotFoundError:
            return False
        if info.state.subjects:
            return True
    return False
