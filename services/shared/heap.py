"""The objects a service builds at start, frozen out of the garbage collector's way.

A service's start leaves some 65,000 long-lived objects behind (Litestar's app and routes, the OpenAPI schema,
msgspec and prometheus types, the catalogue). Python's oldest generation is collected over and over while
requests run, and each full collection walks all of them with the event loop stopped: in the votes service under
the ingest benchmark, 15 full collections in 13 s, the longest 47 ms, which was its p99 latency (49 ms; p50 9 ms).
``gc.freeze()`` moves what exists after start into a permanent generation that collections skip: the longest full
collection is then 0.4 ms, and p99 18 ms (docs/performance-journal.md). Objects made later are collected
as before; a frozen object that loses its last reference is still freed (reference counting), only cycles among
frozen objects would stay, and start-up makes none that it later drops.
"""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

YOUNG_THRESHOLD = 20_000
"""Allocations (net of frees) between two collections of the youngest generation; Python's default is 700.

A request allocates a few hundred objects that reference counting frees as it ends; collected every 700, many are
still alive and get walked. Every 20,000, most are gone: the vote path's CPU in process went 53.1/50.7 to
51.8/48.2 µs a vote (``python -m bench.votes_cpu``, alternately). A young collection walks at most that many
objects: 0.3 ms for 20,000 dicts, lists and tuples here."""


def freeze_heap() -> None:
    """Collect the garbage of start-up, then freeze what remains; call once everything is built."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


@asynccontextmanager
async def frozen_after_start(app: Any) -> AsyncIterator[None]:
    """A Litestar lifespan; listed last, it runs once the others have started."""
    freeze_heap()
    yield
