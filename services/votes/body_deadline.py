"""The deadline of a vote's body: one timer for every request reading one, instead of an ``asyncio.timeout`` each.

granian has no body timeout of its own, so a body that stalls (slow-loris) must be cut off here. An
``asyncio.timeout`` schedules and cancels a timer for every request, and finds the task through asyncio's
Python-level ``current_task``. Every body gets the same time, so the deadlines come due in the order the reads
began: they wait in a queue, and one timer, set for the oldest, cancels the reads that are overdue (as the
publisher keeps the deadlines of its acks, services/votes/publisher.py).

A cancelled read raises ``BodyTimeout`` in its task unless the task was also cancelled from elsewhere (the
client went away, the server stops): then the cancellation goes on, as it does out of ``asyncio.timeout``.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import TypeVar

_T = TypeVar("_T")

BODY_TIMEOUT_S = 5.0
"""How long a vote's body may take to arrive once its head has."""


class BodyTimeout(Exception):
    """The body did not arrive in time."""


class _Read:
    __slots__ = ("deadline", "expired", "finished", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        self.task = task
        self.finished = False
        self.expired = False


class BodyDeadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._reads: deque[_Read] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def within(self, read: Awaitable[_T]) -> _T:
        """``await read``, or ``BodyTimeout`` once ``timeout_s`` have gone by."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None, "a request is read in a task"
        entry = _Read(loop.time() + self.timeout_s, task)
        self._reads.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry.deadline, self._expire)
        try:
            return await read
        except asyncio.CancelledError:
            if entry.expired and task.uncancel() == 0:
                raise BodyTimeout from None
            raise
        finally:
            entry.finished = True
            reads = self._reads
            while reads and reads[0].finished:  # most reads end in the order they began
                reads.popleft()

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        reads = self._reads
        while reads and (reads[0].finished or reads[0].deadline <= now):
            entry = reads.popleft()
            if not entry.finished:
                entry.expired = True
                entry.task.cancel()
        if reads:
            self._timer = loop.call_at(reads[0].deadline, self._expire)
