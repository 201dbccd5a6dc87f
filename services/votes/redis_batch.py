"""The Redis commands of concurrent requests, gathered into one redis-py pipeline per event-loop turn.

redis-py sends each command on a pooled connection of its own, and pays for each a pool checkout, a write and a
reply parse: on the vote path, about 60 µs of CPU more a vote than when concurrent votes share them
(``python -m bench.votes_cpu``). ioredis calls the remedy "autopipelining"; redis-py has no such thing (issue
redis/redis-py#3767, open), so it is built here on redis-py's public API: every command queued during one turn
of the event loop goes out in one non-transactional pipeline (``client.pipeline(transaction=False)``, executed
with ``raise_on_error=False``), and each caller gets its own replies, or its own error. Each command stays what
it was, atomic in Redis; only the round trip is shared. The connection (TLS, password, timeouts) is the client's.

Failures stay redis-py's, so that ``RedisLink`` handles them alike: an error reply fails only the caller whose
command got it; what the pipeline raises (``ConnectionError``, ``TimeoutError``) is raised to every caller of
that batch.

Scripts go as EVALSHA. redis-py's pipeline can run a registered ``Script`` itself, but then asks ``SCRIPT
EXISTS`` before every batch, a second round trip each time; here a NOSCRIPT reply (Redis restarted or flushed)
sends SCRIPT LOAD and the EVALSHA again, in the next batch.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError

Queue = Callable[[Pipeline], object]
"""Puts a caller's commands on the pipeline with redis-py's command methods: ``lambda pipe: pipe.get(key)``."""

_Waiting = tuple[Queue, "asyncio.Future[list[Any]]"]


class RedisBatch:
    def __init__(self, client: Redis, *, max_in_flight: int = 1) -> None:
        self._client = client
        self._max_in_flight = max_in_flight
        self._queued: list[_Waiting] = []
        self._flush_due = False
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    async def run(self, queue: Queue) -> list[Any]:
        """The replies to the commands ``queue`` puts on the pipeline, in order; raises the first error reply."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise ConnectionError("the Redis connection was closed")
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queued.append((queue, future))
        if not self._flush_due and len(self._sending) < self._max_in_flight:
            self._flush_due = True
            loop.call_soon(self._flush)
        return await future

    async def run_script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """The script's reply: EVALSHA in the batch, or when Redis no longer holds the script, SCRIPT LOAD and
        EVALSHA again in the next (all the callers who found it missing share that batch too)."""

        def evalsha(pipe: Pipeline) -> None:
            pipe.evalsha(script.sha, len(keys), *keys, *args)

        def load_and_evalsha(pipe: Pipeline) -> None:
            pipe.script_load(script.script)
            evalsha(pipe)

        try:
            (reply,) = await self.run(evalsha)
        except NoScriptError:
            _, reply = await self.run(load_and_evalsha)
        return reply

    def _flush(self) -> None:
        self._flush_due = False
        if self._closed or not self._queued or len(self._sending) >= self._max_in_flight:
            return
        batch, self._queued = self._queued, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: "asyncio.Task[None]") -> None:
        self._sending.discard(task)
        # What queued up meanwhile goes out now, in one batch.
        self._flush()

    async def _send(self, batch: list[_Waiting]) -> None:
        spans: list[tuple[int, int, asyncio.Future[list[Any]]]] = []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for queue, future in batch:
                    start = len(pipe)
                    try:
                        queue(pipe)
                    except Exception as exc:  # an argument redis-py refuses (DataError): that caller's alone
                        future.set_exception(exc)
                        continue
                    spans.append((start, len(pipe), future))
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            _fail(batch, ConnectionError("the Redis connection was closed"))
            raise
        except Exception as exc:
            _fail(batch, exc)
            return
        for start, end, future in spans:
            if future.done():  # its caller was cancelled
                continue
            mine = replies[start:end]
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)

    async def close(self) -> None:
        """Give up the batches in flight and those waiting (their callers get a ConnectionError)."""
        self._closed = True
        queued, self._queued = self._queued, []
        _fail(queued, ConnectionError("the Redis connection was closed"))
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)


def _fail(batch: list[_Waiting], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
