"""Freezing what a service built at start (services/shared/heap.py)."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from services.shared.heap import frozen_after_start


class _Node:
    next: "_Node | None" = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_what_start_up_built_is_frozen_and_what_comes_after_is_collected_as_before(unfrozen: None) -> None:
    built_at_start = [[index] for index in range(1000)]
    async with frozen_after_start(None):
        frozen = gc.get_freeze_count()
        assert frozen >= len(built_at_start)
        tracked = {id(item) for item in gc.get_objects()}
        assert not any(id(item) in tracked for item in built_at_start)  # out of the collector's way

        made_later = _Node()
        made_later.next = made_later  # a cycle: only the collector frees it
        gone = weakref.ref(made_later)
        del made_later
        gc.collect()
        assert gone() is None
        assert gc.get_freeze_count() == frozen
