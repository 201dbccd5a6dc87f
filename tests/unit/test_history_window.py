"""The buckets a /history query asks for, and its refusals (services/tally/read/history.py)."""

from datetime import UTC, datetime

import pytest

from services.tally.history import entry, minute_of, time_of, unpack
from services.tally.read.history import BadQuery, window

NOW = datetime(2026, 12, 7, 6, 30, tzinfo=UTC)


def _span(bucket: str | None, start: str | None, end: str | None) -> tuple[str, str, int]:
    win = window(bucket, start, end, NOW, 2)
    return time_of(win.first).isoformat(), time_of(win.end).isoformat(), win.buckets


def test_from_and_to_name_the_first_and_last_buckets() -> None:
    # A time: the bucket holding it (a boundary starts the next bucket); a date: the whole day.
    assert _span("hour", "2026-12-07T01:59:00Z", "2026-12-07T02:00:00Z") == (
        "2026-12-07T01:00:00+00:00", "2026-12-07T03:00:00+00:00", 2
    )  # fmt: skip
    assert _span("day", "2026-01-01", "2026-01-03") == ("2026-01-01T00:00:00+00:00", "2026-01-04T00:00:00+00:00", 3)
    assert _span("hour", "2026-12-07T03:30:00+02:00", "2026-12-07T01:30:00Z") == (
        "2026-12-07T01:00:00+00:00", "2026-12-07T02:00:00+00:00", 1
    )  # fmt: skip


def test_defaults_are_the_last_thirty_buckets_and_none_passes_the_open_one() -> None:
    assert _span(None, None, None) == ("2026-11-08T00:00:00+00:00", "2026-12-08T00:00:00+00:00", 30)
    assert _span("hour", None, "2027-01-01T00:00:00Z") == ("2026-12-06T01:00:00+00:00", "2026-12-07T07:00:00+00:00", 30)


@pytest.mark.parametrize(
    ("bucket", "start", "end", "message"),
    [
        ("week", None, None, "bucket: 'week' is not one of hour, day"),
        (None, "yesterday", None, "from: 'yesterday' is not an RFC 3339 time"),
        (None, "2026-02-30", None, "from: '2026-02-30' is not a date"),
        (None, "2026-12-01T10:00:00", None, "from: '2026-12-01T10:00:00' needs a date, a time and an offset"),
        (None, None, "x" * 50, "to: too long"),
        (None, "0001-01-01T00:00:00+05:00", None, "from: '0001-01-01T00:00:00+05:00' is not between the years"),
        (None, None, "0001-01-01", "to: '0001-01-01' is not between the years"),
        (None, None, "9999-12-31", "to: '9999-12-31' is not between the years"),
        (None, "2026-12-05", "2026-12-01", "from: not before to"),
        (None, "2026-12-09", None, "from: in the future"),
        ("hour", "2026-11-01", "2026-11-30", "from: from..to spans 720 hour buckets of 2 tools, 1440 points"),
    ],
)
def test_a_bad_query_names_its_parameter(bucket: str | None, start: str | None, end: str | None, message: str) -> None:
    with pytest.raises(BadQuery) as refused:
        window(bucket, start, end, NOW, 2)
    assert str(refused.value).startswith(message)


def test_500_buckets_of_two_tools_is_the_most_an_answer_holds() -> None:
    assert window("day", "2025-07-26", "2026-12-07", NOW, 2).buckets == 500
    with pytest.raises(BadQuery):
        window("day", "2025-07-25", "2026-12-07", NOW, 2)


@pytest.mark.parametrize("deltas", [(1, 0), (0, 1), (-1, 1), (1, -1), (-1, 0), (0, -1), (0, 0)])
def test_an_entry_keeps_its_minute_and_both_deltas(deltas: tuple[int, int]) -> None:
    minute = minute_of(datetime(2026, 12, 7, 5, 59, 59, 999000, tzinfo=UTC))
    assert time_of(minute) == datetime(2026, 12, 7, 5, 59, tzinfo=UTC)
    assert unpack(entry(minute, *deltas)) == (minute, *deltas)
