"""The first pass's ranges (services/tally/rebuild/readers.py): every sequence once, in order, none too long."""

import pytest

from services.tally.rebuild.readers import CHUNK, READERS, ranges


@pytest.mark.parametrize(("start", "end"), [(1, 1), (1, 7), (1, 500), (40, 1_000), (1, 1_000_000), (5, 2 * CHUNK + 3)])
def test_ranges_cover_every_sequence_once_in_order(start: int, end: int) -> None:
    cut = ranges(start, end)
    covered = [seq for first, last in cut for seq in range(first, last + 1)]
    assert covered == list(range(start, end + 1))
    assert all(last - first + 1 <= CHUNK for first, last in cut)


def test_a_short_stream_still_gives_every_reader_ranges() -> None:
    assert len(ranges(1, 500)) >= 2 * READERS


def test_an_empty_stream_has_no_ranges() -> None:
    assert ranges(1, 0) == []
