"""Reading the VOTES stream from its start, for rebuilds and verification.

An ordered push consumer (no acks, flow control, nats-py recreates it past a gap): all of VOTES, or one
comparison's subject plus the moderation subject (voids apply to every comparison). nats-py's pull ``fetch``
delivers about a quarter as many messages a second as its push delivery (``make bench``'s read-back baselines),
and the replay is what a rebuild waits on most. The consumer is ephemeral, with an inactivity threshold, so an
interrupted replay leaves nothing behind on the server.

Messages are kept in a buffer that the fold drains in batches. When the fold falls behind, the delivery callback
waits, so nats-py holds back its flow-control reply and the server pauses: memory stays bounded however long
the stream is. Each record's stream sequence and the count still pending are cut from the reply subject rather
than through ``msg.metadata``, which builds a datetime and two objects per message (bench/rebuild_parts.py).
"""

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.subjects import MODERATION_SUBJECT, VOTES_ALL, VOTES_STREAM, VOTES_SUBJECT_PREFIX, votes_subject
from services.tally.store import StreamRecord

FoldBatch = Callable[[list[StreamRecord]], Awaitable[None]]

STALL_TIMEOUT_S = 30.0
"""How long the replay waits for a message the stream said was pending before it gives up."""


def replay_subjects(comparison_id: str | None) -> list[str]:
    """Stored as published, or routed to a partition (``votes.v1.r<N>.<i>.<last>``, services/tally/routing.py)."""
    if comparison_id is None:
        return [VOTES_ALL]
    moderation = MODERATION_SUBJECT.removeprefix(VOTES_SUBJECT_PREFIX)
    routed = VOTES_SUBJECT_PREFIX + "*.*."
    return [votes_subject(comparison_id), MODERATION_SUBJECT, routed + comparison_id, routed + moderation]


def delivery_sequences(reply: str) -> tuple[int, int, int]:
    """(stream sequence, consumer sequence, messages still pending) from a JetStream delivery's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`` from older servers;
    newer ones put domain and account hash before the stream and may add a token at the end (as nats-py reads it).
    """
    tokens = reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[6]), int(tokens[8])
    if len(tokens) >= 11 and tokens[0] == "$JS":
        return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.ConsumerSeq]), int(tokens[Msg.Ack.NumPending])
    raise ValueError(f"not a JetStream delivery: reply subject {reply!r}")


class StreamReplay:
    def __init__(self, js: JetStreamContext, comparison_id: str | None = None, batch_size: int = 5000) -> None:
        self._js = js
        self._subjects = replay_subjects(comparison_id)
        self._batch_size = batch_size
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._buffer: list[StreamRecord] = []
        self._arrived = asyncio.Event()
        """Set when a message arrives; the fold waits on it when the buffer is empty."""
        self._room = asyncio.Event()
        """Set while the buffer has room; the delivery callback waits on it (backpressure)."""
        self._room.set()
        self._at_end = False
        """Whether the last message delivered said nothing more was pending (or the stream was empty)."""
        self._consumer_seq = 0
        """The consumer sequence of the last message delivered (the consumer's count of what it sent)."""
        self.reached = 0
        """The highest stream sequence delivered so far (buffered, not necessarily folded)."""
        self.folded_to = 0
        """The highest stream sequence handed to the fold: every matching event up to it has been folded."""
        self.folded = 0
        """How many events were handed to the fold."""
        self.total = 0
        """Matching events in the stream when the replay started, plus any seen since."""

    async def open(self) -> None:
        config = ConsumerConfig(filter_subjects=self._subjects, inactive_threshold=60.0)
        self._subscription = await self._js.subscribe(
            "",  # the config's filter subjects say what to read
            stream=VOTES_STREAM,
            cb=self._on_message,
            config=config,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            # The buffer's bound, not these, holds the server back; these only must not drop what it sent.
            pending_msgs_limit=1_000_000,
            pending_bytes_limit=512 * 1024 * 1024,
        )
        info = await self._subscription.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        self.total = max(self.total, (info.num_pending or 0) + (delivered or 0))
        if self.total == 0:
            self._at_end = True

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _all_delivered(self) -> bool:
        """Whether the server has nothing pending for this replay and nothing on its way to it.

        The last message's pending count was true when it was sent; events appended since (which a live projector
        may have folded already) can be on their way. Only the server knows: nothing pending, and it sent no more
        than arrived here.
        """
        assert self._subscription is not None
        info = await self._subscription.consumer_info()
        sent = info.delivered.consumer_seq if info.delivered is not None else 0
        if info.num_pending or (sent or 0) > self._consumer_seq:
            self._at_end = False
            return False
        return True

    async def _on_message(self, msg: Msg) -> None:
        seq, consumer_seq, pending = delivery_sequences(msg.reply)
        self._consumer_seq = consumer_seq
        if seq <= self.reached:  # the ordered consumer recreated past a gap and re-sent this one
            return
        self._buffer.append(StreamRecord(seq, msg.subject, msg.data))
        self.reached = seq
        self._at_end = pending == 0
        self.total = max(self.total, self.folded + len(self._buffer) + pending)
        self._arrived.set()
        if len(self._buffer) >= 4 * self._batch_size:
            self._room.clear()
            await self._room.wait()

    async def fold_until(self, target: int, fold: FoldBatch, *, stop: Callable[[], bool] | None = None) -> None:
        """Hand every matching event with a sequence up to ``target`` to ``fold``, in order, in batches.

        Returns once the events up to ``target`` are folded, the stream holds no more right now, or ``stop``
        says so after a batch.
        """
        assert self._subscription is not None, "open() first"
        while stop is None or not stop():
            if not self._buffer:
                if self.reached >= target:
                    return
                if self._at_end:
                    drained = await self._all_delivered()
                    if self._buffer:  # arrived while we asked
                        continue
                    if drained:
                        return
                # No await since the buffer was seen empty: nothing arrived in between to miss.
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), STALL_TIMEOUT_S)
                except TimeoutError:
                    raise TimeoutError(
                        f"the replay got nothing for {STALL_TIMEOUT_S:.0f} s at stream sequence {self.reached}"
                    ) from None
                continue
            take = self._buffer[: self._batch_size]
            if take[-1].seq > target:
                take = [record for record in take if record.seq <= target]
            del self._buffer[: len(take)]
            if len(self._buffer) < 2 * self._batch_size:
                self._room.set()
            if take:
                await fold(take)
                self.folded += len(take)
                self.folded_to = take[-1].seq
            if self._buffer and self._buffer[0].seq > target:
                return
