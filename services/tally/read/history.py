"""Reading the history projection (services/tally/history.py): series of points, and a figure as of a time.

Every figure is a sum of ``tally_history`` rows before a whole minute: the rows before the first bucket give its
starting point, and each bucket adds its own rows. A comparison has two tools, so a query reads at most the rows
of two tools.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from services.tally.history import minute_of, time_of
from services.tally.store import LIVE_SCHEMA, SCHEMA_NAME, Connection

BUCKET_MINUTES = {"hour": 60, "day": 1440}
MAX_POINTS = 1000
"""Points an answer holds at most (buckets x tools)."""
DEFAULT_BUCKETS = 30
"""Buckets of an answer that names no ``from``: the last 30 days, or hours."""

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_FIRST_YEAR, _LAST_YEAR = 2000, 9000


class BadQuery(ValueError):
    """A parameter that cannot be used; the message starts with its name."""


@dataclass(frozen=True)
class Window:
    """The buckets asked for, in whole minutes since the epoch."""

    bucket: str
    first: int
    """Start of the first bucket."""
    end: int
    """End of the last bucket."""

    @property
    def size(self) -> int:
        return BUCKET_MINUTES[self.bucket]

    @property
    def buckets(self) -> int:
        return (self.end - self.first) // self.size


def parse_time(name: str, text: str, *, end_of_day: bool = False) -> datetime:
    """An RFC 3339 time with its offset, or a plain date (UTC midnight; the next one with ``end_of_day``)."""
    if len(text) > 40:
        raise BadQuery(f"{name}: too long for an RFC 3339 time")
    if _DATE.fullmatch(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise BadQuery(f"{name}: {text!r} is not a date (YYYY-MM-DD)") from None
        if not _FIRST_YEAR <= day.year <= _LAST_YEAR:
            raise BadQuery(f"{name}: {text!r} is not between the years {_FIRST_YEAR} and {_LAST_YEAR}")
        if end_of_day:
            day = date.fromordinal(day.toordinal() + 1)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"{name}: {text!r} is not an RFC 3339 time such as 2026-11-24T13:00:00Z") from None
    if "T" not in text.upper() or at.tzinfo is None:
        raise BadQuery(f"{name}: {text!r} needs a date, a time and an offset (Z or +hh:mm)")
    if not _FIRST_YEAR <= at.year <= _LAST_YEAR:  # also keeps the UTC conversion and bucket ends representable
        raise BadQuery(f"{name}: {text!r} is not between the years {_FIRST_YEAR} and {_LAST_YEAR}")
    return at.astimezone(UTC)


def window(bucket: str | None, start: str | None, end: str | None, now: datetime, tools: int) -> Window:
    """The buckets of ``from``..``to``: the first holds ``from``, the last ends at or after ``to``, and none
    starts after the bucket holding ``now``."""
    bucket = bucket or "day"
    if bucket not in BUCKET_MINUTES:
        raise BadQuery(f"bucket: {bucket[:20]!r} is not one of hour, day")
    size = BUCKET_MINUTES[bucket]
    current_end = (minute_of(now) // size + 1) * size
    if end is None:
        last = current_end
    else:
        to = parse_time("to", end, end_of_day=True)
        # A date: the whole day, up to the next midnight; a time: up to the end of the bucket holding it.
        last = -(-minute_of(to) // size) * size if _DATE.fullmatch(end) else (minute_of(to) // size + 1) * size
        last = min(last, current_end)
    if start is None:
        first = last - DEFAULT_BUCKETS * size
    else:
        first = minute_of(parse_time("from", start)) // size * size
        if first >= current_end:
            raise BadQuery("from: in the future; there is no history there yet")
    if first >= last:
        raise BadQuery("from: not before to")
    buckets = (last - first) // size
    if buckets * tools > MAX_POINTS:
        raise BadQuery(
            f"from: from..to spans {buckets} {bucket} buckets of {tools} tools, {buckets * tools} points;"
            f" at most {MAX_POINTS} an answer: narrow the range or take day buckets"
        )
    return Window(bucket, first, last)


Series = dict[str, list[tuple[datetime, int, int]]]
"""Per tool: (end of bucket, ship, skip) of each bucket, in order."""


def _table(schema: str) -> str:
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"not a schema name: {schema!r}")
    return f"{schema}.tally_history"


async def read_series(
    conn: Connection, comparison_id: str, tool_ids: list[str], win: Window, schema: str = LIVE_SCHEMA
) -> Series:
    """Each tool's figures at the end of each bucket of ``win``."""
    rows = await conn.fetch(
        "select tool_id, case when minute < $2 then -1 else (minute - $2) / $4 end as i,"
        " sum(ship)::bigint, sum(skip)::bigint"
        f" from {_table(schema)} where comparison_id = $1 and minute < $3 group by 1, 2",
        comparison_id,
        win.first,
        win.end,
        win.size,
    )
    sums: dict[tuple[str, int], tuple[int, int]] = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    series: Series = {}
    for tool_id in tool_ids:
        ship, skip = sums.get((tool_id, -1), (0, 0))
        points = []
        for i in range(win.buckets):
            add = sums.get((tool_id, i))
            if add is not None:
                ship, skip = ship + add[0], skip + add[1]
            points.append((time_of(win.first + (i + 1) * win.size), ship, skip))
        series[tool_id] = points
    return series


async def read_as_of(
    conn: Connection, comparison_id: str, minute: int, schema: str = LIVE_SCHEMA
) -> dict[str, tuple[int, int]]:
    """Each tool's (ship, skip) counting the changes stamped before ``minute``."""
    rows = await conn.fetch(
        f"select tool_id, sum(ship)::bigint, sum(skip)::bigint from {_table(schema)}"
        " where comparison_id = $1 and minute < $2 group by tool_id",
        comparison_id,
        minute,
    )
    return {r[0]: (r[1], r[2]) for r in rows}
