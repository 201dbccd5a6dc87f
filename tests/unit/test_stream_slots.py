"""The read API's count of open live streams, in all and per client address (services/tally/read/sse.py): a place
is taken when a request is admitted and given back exactly once, however its stream ends, even one never started."""

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from typing import cast

from services.tally.read.sse import FiguresBroadcast
from services.tally.read.view import CommunityView, Rendered


class NoComparisons:
    """A view without any comparison: a stream of it ends at once."""

    def on_change(self, callback: Callable[[set[str]], None]) -> None:
        pass

    def get(self, comparison_id: str) -> Rendered | None:
        return None


def broadcast(max_clients: int = 10, max_per_address: int = 2) -> FiguresBroadcast:
    return FiguresBroadcast(cast(CommunityView, NoComparisons()), 15.0, max_clients, max_per_address)


def test_one_address_is_refused_past_its_share_and_others_are_not() -> None:
    streams = broadcast()
    slots = [streams.admit("198.51.100.7") for _ in range(2)]
    assert streams.refusal("198.51.100.7") == "address_full"
    assert streams.refusal("198.51.100.8") is None
    slots[0].release()
    slots[0].release()  # a second release changes nothing
    assert streams.clients == 1
    assert streams.refusal("198.51.100.7") is None


def test_a_full_process_refuses_every_address() -> None:
    streams = broadcast(max_clients=3, max_per_address=2)
    for address in ("a", "a", "b"):
        streams.admit(address)
    assert streams.refusal("c") == "process_full"


def test_a_stream_gives_its_place_back_once_whether_it_ran_or_never_started() -> None:
    streams = broadcast()

    async def run_to_the_end(stream: AsyncIterator[bytes]) -> None:
        async for _ in stream:
            pass

    ran = streams.stream("x", None, streams.admit("a"))
    asyncio.run(run_to_the_end(ran))
    assert streams.clients == 0
    never_started = streams.stream("x", None, streams.admit("a"))
    assert streams.clients == 1
    del never_started, ran
    gc.collect()
    assert streams.clients == 0
    assert streams.refusal("a") is None
