"""Reading the VOTES stream from its start, for rebuilds and verification.

An ephemeral pull consumer (no acks, kept in memory, deleted when the replay closes and by the server after a
minute of inactivity, so an interrupted replay leaves nothing behind) read through ``PullBatches``
(services/tally/pull.py) on the caller's nats-py connection, whatever it is (``nats://``, ``tls://``, with any
login). A reading task fetches batches into a buffer while the fold works on what came before; it fetches only
while the buffer has room for another batch (four at most), so memory stays bounded however long the stream is,
and a fold slower than the server holds the server back. nats-py's ``fetch`` spends a task and a timer per message
(pull.py); its ordered push consumer cost this process more CPU per message than these pull requests
(bench/README.md, ``python -m bench --only baseline.nats.read,rebuild``).

Each record's stream sequence and the count still pending are cut from the reply subject
(services/shared/deliveries.py). A consumer sequence that skips one (deliveries lost with a connection), or a
consumer gone from under the replay, makes a new consumer from the first stream sequence not yet delivered.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.subjects import MODERATION_SUBJECT, VOTES_ALL, VOTES_STREAM, VOTES_SUBJECT_PREFIX, votes_subject
from services.shared.deliveries import delivery_sequences
from services.tally.pull import PullBatches, PullRefused
from services.tally.store import StreamRecord

log = logging.getLogger(__name__)

FoldBatch = Callable[[list[StreamRecord]], Awaitable[None]]

STALL_TIMEOUT_S = 30.0
"""How long the replay waits for a message the stream said was pending before it gives up."""
MAX_RESTARTS = 5
"""How often the replay's consumer may be made again (a gap, a consumer gone) before it gives up."""
FETCH_WAIT_S = 5.0
"""How long one fetch waits at the stream's end for something new before it asks again."""
BUFFERED_BATCHES = 4
"""Batches the reading task may hold ahead of the fold."""
_new_record = tuple.__new__


def replay_subjects(comparison_id: str | None) -> list[str]:
    """Stored as published, or routed to a partition (``votes.v1.r<N>.<i>.<last>``, services/tally/routing.py)."""
    if comparison_id is None:
        return [VOTES_ALL]
    moderation = MODERATION_SUBJECT.removeprefix(VOTES_SUBJECT_PREFIX)
    routed = VOTES_SUBJECT_PREFIX + "*.*."
    return [votes_subject(comparison_id), MODERATION_SUBJECT, routed + comparison_id, routed + moderation]


class ReplayFailed(Exception):
    """The replay's consumer could not go on (see ``MAX_RESTARTS``)."""


class _Restart(Exception):
    """The consumer must be made again from the first stream sequence not yet delivered."""


class StreamReplay:
    """From stream sequence ``start`` (1: the whole stream) to ``end`` if given (the reading task asks for nothing
    past it: a rebuild's parallel readers each take a range, readers.py), ``buffered_batches`` batches ahead of
    the fold at most."""

    def __init__(
        self,
        nc: NATS,
        comparison_id: str | None = None,
        batch_size: int = 5000,
        *,
        start: int = 1,
        end: int | None = None,
        buffered_batches: int = BUFFERED_BATCHES,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._subjects = replay_subjects(comparison_id)
        self._batch_size = batch_size
        self._start = max(1, start)
        self._end = end
        self._buffered = max(2, buffered_batches)
        self._consumer = ""
        self._batches: PullBatches | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._restarts = 0
        self._trouble: str | None = None
        """Why the replay cannot go on; fold_until raises it."""
        self._buffer: list[StreamRecord] = []
        self._arrived = asyncio.Event()
        """Set when a message arrives (or trouble); the fold waits on it when the buffer is empty."""
        self._room = asyncio.Event()
        """Set while the buffer has room for another batch; the reading task waits on it (backpressure)."""
        self._room.set()
        self._at_end = False
        """Whether the last message delivered said nothing more was pending (or the stream was empty)."""
        self._consumer_seq = 0
        """The consumer sequence of the last message delivered (the consumer's count of what it sent)."""
        self.reached = self._start - 1
        """The highest stream sequence delivered so far (buffered, not necessarily folded)."""
        self.folded_to = self._start - 1
        """The highest stream sequence handed to the fold: every matching event up to it has been folded."""
        self.folded = 0
        """How many events were handed to the fold."""
        self.total = 0
        """Matching events in the stream when the replay started, plus any seen since."""

    async def open(self) -> None:
        info = await self._make_consumer(self._start)
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        self.total = max(self.total, (info.num_pending or 0) + (delivered or 0))
        if self.total == 0:
            self._at_end = True
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def close(self) -> None:
        self._closing = True
        reader, self._reader = self._reader, None
        # Cancelled again until it ends: Python 3.11's ``wait_for`` (in PullBatches) drops a cancellation that
        # arrives as its wait ends, and the reading task would go on fetching.
        while reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=0.1)
        await self._drop_consumer()

    async def _make_consumer(self, start_seq: int) -> ConsumerInfo:
        """An ephemeral consumer from ``start_seq`` (1 for the whole stream), and a ``PullBatches`` on it."""
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            filter_subjects=self._subjects,
            inactive_threshold=60.0,  # an interrupted replay leaves nothing behind on the server
            mem_storage=True,
            num_replicas=1,
            **(
                {"deliver_policy": DeliverPolicy.ALL}
                if start_seq <= 1
                else {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_seq}
            ),
        )
        info = await self._js.add_consumer(VOTES_STREAM, config)
        self._consumer, self._consumer_seq = info.name, 0
        self._batches = PullBatches(self._nc, VOTES_STREAM, info.name)
        await self._batches.open()
        return info

    async def _drop_consumer(self) -> None:
        if self._batches is not None:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._batches.close()
            self._batches = None
        if self._consumer:
            with contextlib.suppress(NotFoundError, nats.errors.Error, TimeoutError, OSError):
                await self._js.delete_consumer(VOTES_STREAM, self._consumer)
            self._consumer = ""

    # -- the reading task --------------------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while not self._closing and (self._end is None or self.reached < self._end):
                await self._room.wait()
                try:
                    self._take(*await self._fetch())
                except _Restart as exc:
                    await self._restart(str(exc))
        except ReplayFailed as exc:
            self._trouble = str(exc)
        except Exception as exc:  # told to fold_until rather than lost in a task
            self._trouble = f"the replay could not read the stream: {type(exc).__name__}: {exc}"
        finally:
            self._arrived.set()

    async def _fetch(self) -> tuple[list[StreamRecord], int]:
        """The next deliveries as records, and how many the last of them said were still pending."""
        assert self._batches is not None
        # As much as the buffer has room for in one fetch: fewer round trips than a batch at a time (reading 200,000
        # events, counting only, on a loaded machine: 6.2 and 9.7 s against 7.5 and 13.4 s, alternately).
        room = max(
            self._batch_size,
            min(BUFFERED_BATCHES * self._batch_size, self._buffered * self._batch_size - len(self._buffer)),
        )
        if self._end is not None:  # nothing past the end is asked for (a filtered stream may still send some)
            room = max(1, min(room, self._end - self.reached))
        try:
            messages = await self._batches.fetch(room, wait_s=FETCH_WAIT_S)
        except TimeoutError:  # nothing new at the stream's end
            return [], 0
        except PullRefused as exc:  # the consumer was deleted, or its requests are refused
            raise _Restart(str(exc)) from None
        except (nats.errors.Error, OSError) as exc:  # reconnecting: nats-py comes back by itself
            log.warning("replay: fetch failed (%r); retrying", exc)
            await asyncio.sleep(0.5)
            return [], 0
        if not messages:
            return [], 0
        first, first_consumer_seq, _ = delivery_sequences(messages[0].reply)
        last, last_consumer_seq, pending = delivery_sequences(messages[-1].reply)
        count = len(messages)
        # Consumer sequences go up by one a delivery, in the order they come: one lost shows at the batch's ends.
        if first_consumer_seq != self._consumer_seq + 1 or last_consumer_seq != first_consumer_seq + count - 1:
            raise _Restart(
                f"deliveries lost: consumer sequences {first_consumer_seq} to {last_consumer_seq} came in"
                f" {count} messages after {self._consumer_seq}"
            )
        self._consumer_seq = last_consumer_seq
        if last - first == count - 1:  # stream sequences without a hole between (the usual): none read one by one
            seqs: Iterable[int] = range(first, last + 1)
        else:
            seqs = [delivery_sequences(message.reply)[0] for message in messages]
        # tuple.__new__: a NamedTuple's own __new__ is a Python function, a call per message.
        columns = zip(seqs, [m.subject for m in messages], [m.data for m in messages], strict=True)
        records = [_new_record(StreamRecord, fields) for fields in columns]
        return records, pending

    def _take(self, records: list[StreamRecord], pending: int) -> None:
        if not records:
            return
        self._at_end = pending == 0
        fresh = records if records[0].seq > self.reached else [r for r in records if r.seq > self.reached]
        if fresh:  # (a consumer made again re-sends what the old one had sent)
            self._buffer += fresh
            self.reached = fresh[-1].seq
        self.total = max(self.total, self.folded + len(self._buffer) + pending)
        self._arrived.set()
        if len(self._buffer) > (self._buffered - 1) * self._batch_size:
            self._room.clear()

    async def _restart(self, reason: str) -> None:
        """A new consumer from the first sequence not yet delivered; the old one is deleted."""
        self._restarts += 1
        log.warning("replay (consumer %s): %s; making it again from %d", self._consumer, reason, self.reached + 1)
        if self._restarts > MAX_RESTARTS:
            raise ReplayFailed(f"the replay's consumer failed {self._restarts} times, the last: {reason}")
        await self._drop_consumer()
        for attempt in range(10):
            try:
                await self._make_consumer(self.reached + 1)
                return
            except (nats.errors.Error, OSError) as exc:
                log.warning("replay: making its consumer again failed (%r); try %d", exc, attempt + 1)
                await asyncio.sleep(1.0)
        raise ReplayFailed("the replay's consumer could not be made again")

    # -- the fold's side ---------------------------------------------------------------------------------------

    async def _all_delivered(self) -> bool:
        """Whether the server has nothing pending for this replay and nothing on its way to it.

        The last message's pending count was true when it was sent; events appended since (which a live projector
        may have folded already) can be on their way. Only the server knows: nothing pending, and it sent no more
        than arrived here.
        """
        consumer = self._consumer
        if not consumer:
            return False  # being made again
        try:
            info = await self._js.consumer_info(VOTES_STREAM, consumer)
        except NotFoundError:
            return False  # gone: the reading task makes it again
        sent = info.delivered.consumer_seq if info.delivered is not None else 0
        if consumer != self._consumer:
            return False
        if info.num_pending or (sent or 0) > self._consumer_seq:
            self._at_end = False
            return False
        return True

    async def fold_until(self, target: int, fold: FoldBatch, *, stop: Callable[[], bool] | None = None) -> None:
        """Hand every matching event with a sequence up to ``target`` to ``fold``, in order, in batches.

        Returns once the events up to ``target`` are folded, the stream holds no more right now, or ``stop``
        says so after a batch.
        """
        assert self._reader is not None, "open() first"
        while stop is None or not stop():
            if self._trouble is not None:
                raise ReplayFailed(self._trouble)
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
            if len(self._buffer) <= (self._buffered - 1) * self._batch_size:
                self._room.set()
            if take:
                await fold(take)
                self.folded += len(take)
                self.folded_to = take[-1].seq
            if self._buffer and self._buffer[0].seq > target:
                return
