"""What concurrent requests ask of Redis during one event-loop turn, sent as one call: a Redis "autopipeline".

redis-py sends each command on a pooled connection of its own, and pays for each a pool checkout, a write and a
parse of the reply. ioredis gathers the commands of one event-loop turn into one pipeline by itself
("autopipelining"); redis-py has no such thing (issue redis/redis-py#3767, open). This is built on its public API,
one step further: the items gathered (the admissions of the votes in flight) go to Redis as one command,
``send(items)`` (admission.py: one EVALSHA of admission.lua for all of them, their arguments as one JSON string),
rather than as a pipeline of one command each, since redis-py's CPU goes by the command and by the argument.

CPU a vote in process (``python -m bench.votes_cpu 24000 2``, medians of 3 runs A/B alternately on a busy 2-core
machine), against the hand-made RESP connection this replaced (~155 µs): one redis-py call per admission +150 µs;
a redis-py pipeline per turn, one command per admission, +25-35 µs; one script call per turn, arguments one by
one, +25 µs; the same with the arguments as one JSON string (this) +8 µs.

One batch is in flight at a time: what is submitted meanwhile goes out together as soon as it is answered, so under
load the batches grow rather than the calls (32 a call at 32 requests in flight), and ``max_items`` bounds how long
one script holds Redis.

Failures stay redis-py's, so that ``RedisLink`` handles them alike: what ``send`` raises (``ConnectionError``,
``TimeoutError``, a ``ResponseError`` for the whole call) is raised to every caller of that batch; an exception in
the place of one item's reply is raised to that item's caller alone.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from redis.exceptions import ConnectionError

_Item = TypeVar("_Item")
_Reply = TypeVar("_Reply")


class RedisBatch(Generic[_Item, _Reply]):
    def __init__(
        self, send: Callable[[list[_Item]], Awaitable[Sequence[_Reply | Exception]]], *, max_items: int
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._queued: list[tuple[_Item, asyncio.Future[_Reply]]] = []
        self._flush_due = False
        self._sending: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: _Item) -> _Reply:
        """The reply to ``item``, sent with whatever else is submitted in this turn of the event loop."""
        if self._closed:
            raise ConnectionError("the Redis connection was closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Reply] = loop.create_future()
        self._queued.append((item, future))
        if not self._flush_due and self._sending is None:
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_due = False
        if self._closed or not self._queued or self._sending is not None:
            return
        batch, self._queued = self._queued[: self._max_items], self._queued[self._max_items :]
        self._sending = asyncio.get_running_loop().create_task(self._deliver(batch))
        self._sending.add_done_callback(self._sent)

    def _sent(self, _: "asyncio.Task[None]") -> None:
        self._sending = None
        self._flush()  # what was submitted meanwhile, in one batch

    async def _deliver(self, batch: list[tuple[_Item, "asyncio.Future[_Reply]"]]) -> None:
        # Callers cancelled while waiting still get their item sent: the others' replies are in the same call.
        try:
            replies = await self._send([item for item, _ in batch])
            if len(replies) != len(batch):
                raise ConnectionError(f"{len(replies)} replies from Redis for {len(batch)} requests")
        except asyncio.CancelledError:
            _fail(batch, ConnectionError("the Redis connection was closed"))
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def close(self) -> None:
        """Give up the batch in flight and those waiting (their callers get a ConnectionError)."""
        self._closed = True
        queued, self._queued = self._queued, []
        _fail(queued, ConnectionError("the Redis connection was closed"))
        if self._sending is not None:
            sending = self._sending
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)


def _fail(batch: Sequence[tuple[object, "asyncio.Future[_Reply]"]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
