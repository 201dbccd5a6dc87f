"""BodyDeadlines: a read in time returns, a stalled one raises BodyTimeout, a cancellation from elsewhere stays one."""

import asyncio

import pytest

from services.votes.body_deadline import BodyDeadlines, BodyTimeout


async def arrives_after(seconds: float, value: bytes) -> bytes:
    await asyncio.sleep(seconds)
    return value


async def test_a_read_in_time_returns_what_it_read() -> None:
    deadlines = BodyDeadlines(1.0)
    assert await deadlines.within(arrives_after(0.01, b"body")) == b"body"


async def test_a_stalled_read_times_out_while_the_others_finish() -> None:
    deadlines = BodyDeadlines(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    stalled = asyncio.create_task(deadlines.within(arrives_after(60, b"never")))
    quick = [asyncio.create_task(deadlines.within(arrives_after(0.01 * i, b"%d" % i))) for i in range(20)]
    assert await asyncio.gather(*quick) == [b"%d" % i for i in range(20)]
    with pytest.raises(BodyTimeout):
        await stalled
    assert loop.time() - started >= 0.2
    assert stalled.cancelling() == 0  # the deadline's own cancellation is taken back
    # Reads after the first timer fired get deadlines of their own.
    with pytest.raises(BodyTimeout):
        await deadlines.within(arrives_after(60, b"never"))
    assert await deadlines.within(arrives_after(0.01, b"late")) == b"late"


async def test_a_cancellation_from_elsewhere_is_not_a_timeout() -> None:
    deadlines = BodyDeadlines(10.0)
    reading = asyncio.create_task(deadlines.within(arrives_after(60, b"never")))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_a_cancellation_from_elsewhere_goes_on_when_the_deadline_also_passed() -> None:
    deadlines = BodyDeadlines(10.0)
    reading = asyncio.create_task(deadlines.within(arrives_after(60, b"never")))
    await asyncio.sleep(0.01)
    # In one turn of the loop, before the read runs again: its deadline fires, and the client goes away.
    deadlines._reads[0].deadline = 0.0
    deadlines._expire()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
