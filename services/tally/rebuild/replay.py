"""Reading the VOTES stream from its start, for rebuilds and verification.

Two ways to read, the same replay: where the NATS URL is plain ``nats://``, a pull consumer read over a connection
of the replay's own (replay_wire.py), which spends a fraction of nats-py's CPU per message; otherwise (TLS,
websockets, or no URL given) nats-py's ordered push consumer (no acks, flow control, recreated past a gap). nats-py's
pull ``fetch`` delivers about a quarter as many messages a second as its push delivery (``make bench``'s read-back
baselines), and the replay is what a rebuild waits on most. Either consumer is ephemeral, with an inactivity
threshold, so an interrupted replay leaves nothing behind on the server.

Messages are kept in a buffer that the fold drains in batches, and no more is asked for (or, through nats-py,
acknowledged to flow control) than the buffer has room for: memory stays bounded however long the stream is. Each
record's stream sequence and the count still pending are cut from the reply subject rather than through
``msg.metadata``, which builds a datetime and two objects per message (bench/rebuild_parts.py).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, ConsumerInfo, DeliverPolicy

from contracts.subjects import MODERATION_SUBJECT, VOTES_ALL, VOTES_STREAM, VOTES_SUBJECT_PREFIX, votes_subject
from services.shared.nats_wire import LinkDown, LinkUnsupported, parse_servers
from services.tally.rebuild.replay_wire import PullSession, delivery_sequences
from services.tally.store import StreamRecord

log = logging.getLogger(__name__)

FoldBatch = Callable[[list[StreamRecord]], Awaitable[None]]

STALL_TIMEOUT_S = 30.0
"""How long the replay waits for a message the stream said was pending before it gives up."""
MAX_RESTARTS = 5
"""How often the replay's own consumer may be made again (lost connection, skipped sequence) before it gives up."""


def replay_subjects(comparison_id: str | None) -> list[str]:
    """Stored as published, or routed to a partition (``votes.v1.r<N>.<i>.<last>``, services/tally/routing.py)."""
    if comparison_id is None:
        return [VOTES_ALL]
    moderation = MODERATION_SUBJECT.removeprefix(VOTES_SUBJECT_PREFIX)
    routed = VOTES_SUBJECT_PREFIX + "*.*."
    return [votes_subject(comparison_id), MODERATION_SUBJECT, routed + comparison_id, routed + moderation]


class ReplayFailed(Exception):
    """The replay's own consumer could not go on (see ``MAX_RESTARTS``)."""


class StreamReplay:
    def __init__(
        self,
        js: JetStreamContext,
        comparison_id: str | None = None,
        batch_size: int = 5000,
        *,
        nats_url: str | None = None,
    ) -> None:
        """``nats_url``: read over a connection of the replay's own where it is plain ``nats://``."""
        self._js = js
        self._subjects = replay_subjects(comparison_id)
        self._batch_size = batch_size
        self._nats_url = nats_url
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._session: PullSession | None = None
        self._restarts = 0
        self._restarting: asyncio.Task[None] | None = None
        self._trouble: str | None = None
        """Why the replay's own consumer cannot go on (after ``MAX_RESTARTS``); fold_until raises it."""
        self._buffer: list[StreamRecord] = []
        self._arrived = asyncio.Event()
        """Set when a message arrives; the fold waits on it when the buffer is empty."""
        self._room = asyncio.Event()
        """Set while the buffer has room; nats-py's delivery callback waits on it (backpressure)."""
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

    @property
    def own_connection(self) -> bool:
        """Whether the replay reads over its own connection (else through nats-py)."""
        return self._session is not None

    async def open(self) -> None:
        info = await self._open_own(1, may_fall_back=True) if self._nats_url is not None else None
        if info is None:
            info = await self._open_nats_py()
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        self.total = max(self.total, (info.num_pending or 0) + (delivered or 0))
        if self.total == 0:
            self._at_end = True

    async def _open_own(self, start_seq: int, *, may_fall_back: bool) -> ConsumerInfo | None:
        """The replay's own consumer and connection from ``start_seq``; None where the URL or server is not spoken
        (and, ``may_fall_back``, where no server answers): nats-py reads instead."""
        assert self._nats_url is not None
        try:
            servers = parse_servers(self._nats_url)
        except LinkUnsupported as exc:
            log.info("the replay reads through nats-py: %s", exc)
            return None
        session = PullSession(
            self._js, servers, self._subjects, self._batch_size, self._deliver, self._on_trouble, self._free
        )
        try:
            info = await session.open(start_seq)
        except LinkUnsupported as exc:
            log.info("the replay reads through nats-py: %s", exc)
            return None
        except LinkDown as exc:
            if not may_fall_back:
                raise  # making it again after trouble: _restart tries once more
            log.warning("the replay reads through nats-py: %s", exc)
            return None
        self._session, self._consumer_seq = session, 0
        session.ask()
        return info

    async def _open_nats_py(self) -> ConsumerInfo:
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
        return await self._subscription.consumer_info()

    async def close(self) -> None:
        if self._restarting is not None:
            self._restarting.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    async def _consumer_info(self) -> ConsumerInfo:
        if self._session is not None:
            return await self._session.info()
        assert self._subscription is not None
        return await self._subscription.consumer_info()

    async def _all_delivered(self) -> bool:
        """Whether the server has nothing pending for this replay and nothing on its way to it.

        The last message's pending count was true when it was sent; events appended since (which a live projector
        may have folded already) can be on their way. Only the server knows: nothing pending, and it sent no more
        than arrived here.
        """
        info = await self._consumer_info()
        sent = info.delivered.consumer_seq if info.delivered is not None else 0
        if info.num_pending or (sent or 0) > self._consumer_seq:
            self._at_end = False
            return False
        return True

    def _free(self) -> int:
        """Room in the buffer: what the replay's own consumer may ask for."""
        return 4 * self._batch_size - len(self._buffer)

    def _deliver(self, seq: int, consumer_seq: int, pending: int, subject: str, data: bytes) -> None:
        self._consumer_seq = consumer_seq
        if seq <= self.reached:  # a consumer made again (past a gap, or after trouble) re-sent this one
            return
        self._buffer.append(StreamRecord(seq, subject, data))
        self.reached = seq
        self._at_end = pending == 0
        self.total = max(self.total, self.folded + len(self._buffer) + pending)
        self._arrived.set()

    async def _on_message(self, msg: Msg) -> None:
        seq, consumer_seq, pending = delivery_sequences(msg.reply)
        self._deliver(seq, consumer_seq, pending, msg.subject, msg.data)
        if self._free() <= 0:
            self._room.clear()
            await self._room.wait()

    def _on_trouble(self, reason: str) -> None:
        old, self._session = self._session, None
        self._restarts += 1
        if self._restarts > MAX_RESTARTS:
            self._trouble = f"the replay's consumer failed {self._restarts} times, the last: {reason}"
            self._arrived.set()
            return
        self._restarting = asyncio.get_running_loop().create_task(self._restart(old))

    async def _restart(self, old: PullSession | None) -> None:
        """A new consumer from the first sequence not yet delivered; the old one is deleted."""
        try:
            if old is not None:
                await old.close()
            for attempt in range(10):
                try:
                    if await self._open_own(self.reached + 1, may_fall_back=False) is None:
                        self._trouble = "the replay's own connection is no longer spoken by the server"
                    break
                except (OSError, TimeoutError, LinkDown) as exc:
                    log.warning("replay: making its consumer again failed (%s); try %d", exc, attempt + 1)
                    await asyncio.sleep(1.0)
            else:
                self._trouble = "the replay's consumer could not be made again"
        except Exception as exc:  # told to fold_until rather than lost in a task
            self._trouble = f"the replay's consumer could not be made again: {type(exc).__name__}: {exc}"
        finally:
            self._restarting = None
            self._arrived.set()

    async def fold_until(self, target: int, fold: FoldBatch, *, stop: Callable[[], bool] | None = None) -> None:
        """Hand every matching event with a sequence up to ``target`` to ``fold``, in order, in batches.

        Returns once the events up to ``target`` are folded, the stream holds no more right now, or ``stop``
        says so after a batch.
        """
        assert self._subscription is not None or self._session is not None or self._restarting, "open() first"
        while stop is None or not stop():
            if self._trouble is not None:
                raise ReplayFailed(self._trouble)
            if not self._buffer:
                if self.reached >= target:
                    return
                if self._at_end and self._restarting is None:
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
            if self._session is not None:
                self._session.ask()
            if take:
                await fold(take)
                self.folded += len(take)
                self.folded_to = take[-1].seq
            if self._buffer and self._buffer[0].seq > target:
                return
