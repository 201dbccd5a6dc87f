"""Reading the VOTES stream from its start, for rebuilds and verification.

An ephemeral consumer with no acks (nothing to remember: the reader keeps its own position) and a filter: all
of VOTES, or one comparison's subject plus the moderation subject (voids apply to every comparison). It is
created with an inactivity threshold, so an interrupted replay leaves nothing behind on the server.
"""

import secrets
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import MODERATION_SUBJECT, VOTES_ALL, VOTES_STREAM, VOTES_SUBJECT_PREFIX, votes_subject
from services.tally.store import StreamRecord

FoldBatch = Callable[[list[StreamRecord]], Awaitable[None]]


def replay_subjects(comparison_id: str | None) -> list[str]:
    """Stored as published, or routed to a partition (``votes.v1.r<N>.<i>.<last>``, services/tally/routing.py)."""
    if comparison_id is None:
        return [VOTES_ALL]
    moderation = MODERATION_SUBJECT.removeprefix(VOTES_SUBJECT_PREFIX)
    routed = VOTES_SUBJECT_PREFIX + "*.*."
    return [votes_subject(comparison_id), MODERATION_SUBJECT, routed + comparison_id, routed + moderation]


class StreamReplay:
    def __init__(self, js: JetStreamContext, comparison_id: str | None = None, batch_size: int = 5000) -> None:
        self._js = js
        self._subjects = replay_subjects(comparison_id)
        self._batch_size = batch_size
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._buffer: list[StreamRecord] = []
        self.reached = 0
        """The highest stream sequence delivered so far."""
        self.folded = 0
        """How many events were handed to the fold."""
        self.total = 0
        """Matching events in the stream when the replay started, plus any seen since."""

    async def open(self) -> None:
        name = "replay-" + secrets.token_hex(6)
        config = ConsumerConfig(
            name=name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            filter_subjects=self._subjects,
            inactive_threshold=60.0,
            mem_storage=True,
        )
        info = await self._js.add_consumer(VOTES_STREAM, config)
        self.total = info.num_pending or 0
        self._subscription = await self._js.pull_subscribe_bind(consumer=name, stream=VOTES_STREAM)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _fetch(self) -> bool:
        """Fetch the next batch into the buffer; False when nothing more is in the stream right now."""
        assert self._subscription is not None, "open() first"
        try:
            messages = await self._subscription.fetch(batch=self._batch_size, timeout=0.5)
        except TimeoutError:  # nats-py raises its own, or asyncio's when its deadline ran out between two requests
            return False
        for message in messages:
            metadata = message.metadata
            self._buffer.append(StreamRecord(metadata.sequence.stream, message.subject, message.data))
        if messages:
            last = messages[-1].metadata
            self.reached = max(self.reached, last.sequence.stream)
            self.total = max(self.total, self.folded + len(self._buffer) + (last.num_pending or 0))
        return bool(messages)

    async def fold_until(self, target: int, fold: FoldBatch) -> None:
        """Hand every matching event with a sequence up to ``target`` to ``fold``, in order, in batches."""
        while True:
            if not self._buffer and (self.reached >= target or not await self._fetch()):
                return
            take = [record for record in self._buffer if record.seq <= target]
            self._buffer = self._buffer[len(take) :]
            if take:
                await fold(take)
                self.folded += len(take)
            if self._buffer:  # the next one is past the target
                return
