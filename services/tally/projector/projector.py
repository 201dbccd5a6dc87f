"""The projector: pulls VOTES in batches and folds each batch into Postgres in one transaction.

Delivery is at least once. A batch is acked (one ack: the consumer acks ALL up to the last message) only after
its transaction committed; a crash before the ack means redelivery, and ``apply_batch`` skips what the recorded
position already covers. After each commit it announces each changed comparison's new counts on
``tally.v1.<comparison>``.

A ``Projector`` folds one partition (services/tally/partitions.py) with the durable consumer and position row of
that partition; a process runs one per partition it is given (SHIPSKIP_PROJECTOR_PARTITIONS, default all).
"""

import asyncio
import contextlib
import logging
import signal
import time

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.notices import TallyChanged, encode_notice
from contracts.subjects import VOTES_STREAM, tally_notice_subject
from infra.migrate import migrate
from services.shared.config import ConfigError
from services.shared.deliveries import delivery_sequences
from services.shared.heap import freeze_heap
from services.shared.jetstream import connect, ensure_tally_consumer, ensure_votes_stream
from services.shared.telemetry_settings import TelemetrySettings
from services.tally.changes import record_changes
from services.tally.layout import claim_layout
from services.tally.partitions import UNPARTITIONED, Partition, PartitionGone
from services.tally.pools import folding_pool
from services.tally.projector.metrics import ProjectorMetrics
from services.tally.projector.monitor import projector_monitor
from services.tally.pull import PullBatches, PullRefused
from services.tally.routing import consumer_filters, recorded_routing, stream_routing
from services.tally.settings import TallySettings
from services.tally.store import BatchResult, Projection, StreamRecord

log = logging.getLogger(__name__)

RATE_WINDOW_S = 0.5
"""The arrival rate that decides the busy linger is taken over the fetches of at least this long (``_linger_s``)."""


class Projector:
    def __init__(
        self,
        settings: TallySettings,
        nc: NATS,
        js: JetStreamContext,
        pool: asyncpg.Pool,
        partition: Partition = UNPARTITIONED,
        metrics: ProjectorMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._nc = nc
        self._js = js
        self._pool = pool
        self.partition = partition
        self._projection = Projection(settings.ballots_per_client_day, partition=partition)
        self._stopping = asyncio.Event()
        self.position = 0
        """The stream sequence folded up to (read from Postgres at start, then each batch's)."""
        self._delivered = 0
        """The consumer sequence of the last delivery taken since the consumer was last reset."""
        self._notices: list[TallyChanged] = []
        """The change notices of the batch in hand, read in its transaction; ``_announce`` publishes them."""
        self._filters: list[str] = []
        """The subjects the consumer reads (services/tally/routing.py)."""
        self._checked = 0.0
        self._window_start = 0.0
        """When the current rate window began (event-loop time of a fetch); ``_linger_s`` measures over it."""
        self._window_events = 0
        """Events fetched since the window began."""
        self._busy = False
        """Whether events came faster than ``busy_rate`` over the last whole window."""

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        await ensure_votes_stream(self._js, self._settings.duplicate_window_s, self._settings.servers.stream_replicas)
        async with self._pool.acquire() as conn:
            self.position = await self._projection.position(conn)
        subscription = await self._subscribe()
        if subscription is None:
            return
        log.info("projector running (partition %s, from stream sequence %d)", self.partition.name, self.position + 1)
        stopped = asyncio.create_task(self._stopping.wait())
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            fetched_at = loop.time()
            # A stop must not wait on a fetch (nor on a fetch that hangs): only a batch in hand is finished.
            fetch = asyncio.create_task(subscription.fetch(self._settings.batch_size, wait_s=0.5))
            done, _ = await asyncio.wait({fetch, stopped}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED)
            if fetch not in done:
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                continue
            try:
                messages = fetch.result()
            except TimeoutError:  # nothing arrived in time
                if await self._idle_check():
                    subscription = await self._resubscribe(subscription)
                    if subscription is None:
                        break
                continue
            except PullRefused as exc:  # e.g. the consumer was deleted: _subscribe creates it again
                log.warning("%s; resetting the tally consumer", exc)
                subscription = await self._resubscribe(subscription)
                if subscription is None:
                    break
                continue
            except (nats.errors.Error, OSError) as exc:
                log.warning("fetch failed (%r); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            records = self._records_in_order(messages)
            if records is None:
                # Some delivery never reached us (a fetch cut short, a connection lost with messages on the wire):
                # the server holds those messages as pending, and acking this batch (AckPolicy.ALL) would ack them
                # unfolded. Drop the batch and have the consumer deliver again from the recorded position.
                log.warning("deliveries lost in transit; delivering again from stream sequence %d", self.position + 1)
                subscription = await self._resubscribe(subscription)
                if subscription is None:
                    break
                continue
            await self._fold(messages, records)
            linger_s = self._linger_s(len(messages), fetched_at)
            if len(messages) < self._settings.batch_size:
                await self._linger(fetched_at + linger_s)
        stopped.cancel()
        if subscription is not None:
            await self._close(subscription)

    @staticmethod
    async def _close(subscription: PullBatches) -> None:
        with contextlib.suppress(nats.errors.Error, OSError):
            await subscription.close()

    async def _resubscribe(self, subscription: PullBatches) -> PullBatches | None:
        await self._close(subscription)
        return await self._subscribe()

    async def _linger(self, until: float) -> None:
        """Caught up while votes keep coming: let the next batch gather before fetching it.

        Each batch costs its fetch, its transaction and its notices whatever its size; at a few thousand votes per
        second a projector that fetches again at once folds batches of a few dozen, and it, Postgres and NATS
        spent 0.78 cores on the ingest benchmark against 0.57 with batches gathered for 25 ms
        (docs/performance-journal.md), CPU that the votes service on the same machine needs. A vote after a quiet
        spell is folded at once (its fetch was waiting for it); under load each waits at most
        ``SHIPSKIP_BATCH_LINGER_MS`` more (``SHIPSKIP_BUSY_LINGER_MS`` past ``SHIPSKIP_BUSY_RATE``, ``_linger_s``). A
        projector behind (full batches) never waits.
        """
        delay = until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _linger_s(self, fetched: int, fetched_at: float) -> float:
        """How long the next batch may gather: ``busy_linger_s`` (300 ms) while events arrive faster than
        ``busy_rate`` (4,000 a second), else ``batch_linger_s`` (25 ms).

        Past 4,000 a second the CPU the projector, Postgres and NATS spend on each batch (its fetch, its ack, a
        dozen statements) is what the votes service on the same machine lacks. Batches gathered for 100 ms instead
        of 25 took 11 µs less of their CPU a vote and made 6 % more votes a second; 300 ms instead of 100 another
        2.5 µs and 6 to 9 % (docs/performance-journal.md), and a vote is still folded within about 0.4 s.

        The rate is taken over whole windows of at least ``RATE_WINDOW_S``: the events the fetches brought since
        the window began, over the time since. A single batch would not do at 300 ms: at the freshness benchmark's
        2,000 votes a second (25 ms batches, p99 ~50 ms against its 250 ms bound) a burst of a few dozen votes can
        make one batch look twice as fast, and one 300 ms wait would hold back more than a hundredth of the votes.
        A quiet spell (a fetch that waited for what it brought) ends a window with a low rate.
        """
        self._window_events += fetched
        elapsed = fetched_at - self._window_start
        if elapsed >= RATE_WINDOW_S:
            self._busy = self._window_events >= self._settings.busy_rate * elapsed
            self._window_start, self._window_events = fetched_at, 0
        return self._settings.busy_linger_s if self._busy else self._settings.batch_linger_s

    async def _subscribe(self) -> PullBatches | None:
        """Reset the consumer to deliver from the first event past ``self.position``, then bind to it.

        The position recorded in Postgres, not the consumer's cursor, says what has been folded. A batch delivered
        to a process that died before its commit stays pending on the server until ``ack_wait``, while the next
        fetch gets the messages after it; folding and acking those (AckPolicy.ALL) would leave the first batch
        unfolded for good. Resetting (nats-server 2.14+) clears the pending deliveries and restarts the consumer's
        delivery sequence at 1, which ``_records_in_order`` then follows. None when stopped meanwhile.
        """
        while not self._stopping.is_set():
            try:
                # Pull requests of a previous subscription expire within the fetch timeout; let them, so that none
                # takes a message delivered after the reset.
                await asyncio.sleep(0.6)
                self._filters = await self._consumer_filters()
                await ensure_tally_consumer(
                    self._js, self._settings.max_ack_pending, self.partition.name, self._filters
                )
                await self._js.reset_consumer(VOTES_STREAM, self.partition.name, seq=self.position + 1)
                subscription = PullBatches(self._nc, VOTES_STREAM, self.partition.name)
                await subscription.open()
            except (nats.errors.Error, OSError) as exc:
                log.warning("cannot reset the tally consumer (%r); retrying", exc)
                continue
            self._delivered = 0
            return subscription
        return None

    async def _consumer_filters(self) -> list[str]:
        """What the consumer may read from the next event on: its partition's routed subjects when the stream's
        routing allows, else every event (services/tally/routing.py)."""
        routing = await stream_routing(self._js)
        try:
            async with self._pool.acquire() as conn:
                recorded = await recorded_routing(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("routing not read from Postgres (%s); reading every event", exc)
            recorded = (0, 0)
        filters = consumer_filters(self.partition, routing, recorded, self.position)
        if self.partition.count > 1 and len(filters) == 1:
            log.warning(
                "partition %s reads every event: the stream does not route by %d partitions"
                " (`shipskip rebuild --partitions %d` sets that up)",
                self.partition.name,
                self.partition.count,
                self.partition.count,
            )
        return filters

    async def _idle_check(self) -> bool:
        """Every few seconds while idle: stop if a rebuild re-partitioned the projection (this partition's row is
        gone); True when the consumer should read other subjects (the stream's routing changed)."""
        if time.monotonic() - self._checked < 5.0:
            return False
        self._checked = time.monotonic()
        try:
            async with self._pool.acquire() as conn:
                exists = await conn.fetchval(
                    "select count(*) from projection_position where projection = $1", self.partition.name
                )
            filters = await self._consumer_filters()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, nats.errors.Error, OSError) as exc:
            log.debug("idle check skipped: %r", exc)
            return False
        if not exists:
            raise PartitionGone(self.partition)
        return filters != self._filters

    def _records_in_order(self, messages: list[Msg]) -> list[StreamRecord] | None:
        """The deliveries as records, if they follow the last one taken with none missing (consumer sequences).

        The sequences are cut from the reply subject (services/shared/deliveries.py): ``msg.metadata`` builds a
        datetime and three objects per message, 5 % of the projector's time under the ingest benchmark.
        """
        records = []
        delivered = self._delivered
        for message in messages:
            stream_seq, consumer_seq, _ = delivery_sequences(message.reply)
            if consumer_seq != delivered + 1:
                return None
            delivered = consumer_seq
            records.append(StreamRecord(stream_seq, message.subject, message.data))
        self._delivered = delivered
        return records

    async def _fold(self, messages: list[Msg], records: list[StreamRecord]) -> None:
        started = time.perf_counter()
        result = await self._commit(records)
        self.position = result.position
        if self._metrics is not None:
            self._metrics.folded(self.partition.name, len(messages), result.dead_letters, time.perf_counter() - started)
        try:
            await messages[-1].ack()
        except (nats.errors.Error, OSError) as exc:
            # Committed already: a redelivery will be recognised by the position and skipped.
            log.warning("ack failed (%s); the batch will be redelivered and skipped", exc)
        await self._announce(result)

    async def _commit(self, records: list[StreamRecord]) -> BatchResult:
        """One transaction; on a database failure wait and retry the same batch, with backoff."""
        delay = 0.2
        while True:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    result = await self._projection.apply_batch(conn, records)
                    self._notices = await record_changes(conn, result, self.partition.name)
                    return result
            except (
                asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError,
                # Shutting down, starting up, restarting: "the database system is shutting down" and the like.
                asyncpg.exceptions.OperatorInterventionError,
                # A pooled connection still taking in the error that ended it ("another operation is in progress").
                asyncpg.exceptions.InternalClientError,
                OSError,
            ) as exc:
                log.warning("postgres unavailable (%s); retrying the batch in %.1fs", exc, delay)
                # Every pooled connection may be dead or half-closed: retry on new ones.
                await self._pool.expire_connections()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _announce(self, result: BatchResult) -> None:
        """Publish the change notices of the batch just committed (see services/tally/changes.py).

        Core NATS delivers at most once: a reader that misses a notice sees the gap in the next one's
        ``previous`` and reloads from Postgres. While reconnecting, nats-py buffers publishes and sends them after.
        """
        notices, self._notices = self._notices, []
        for notice in notices:
            if notice.position != result.position:
                continue  # cannot happen (_commit sets both together); never announce another batch's counts
            try:
                await self._nc.publish(tally_notice_subject(notice.comparison_id), encode_notice(notice))
            except (nats.errors.Error, OSError) as exc:
                log.warning("change notices of position %d not published (%s)", result.position, exc)
                return


async def run_projector(settings: TallySettings | None = None, telemetry: TelemetrySettings | None = None) -> None:
    settings = settings or TallySettings.from_env()
    telemetry = telemetry or TelemetrySettings.from_env()
    await migrate(settings.servers.database_url)
    nc = await connect(settings.servers.nats, "shipskip-projector")
    # A connection per partition's batch in hand, and one to spare.
    pool = await folding_pool(settings.servers.database_url, max_size=len(settings.projector_partitions) + 1)
    metrics = ProjectorMetrics()
    projectors = [
        Projector(settings, nc, nc.jetstream(), pool, Partition(index, settings.partitions), metrics)
        for index in settings.projector_partitions
    ]
    monitor = projector_monitor(
        metrics,
        lambda: {projector.partition.name: projector.position for projector in projectors},
        nc,
        pool,
        telemetry.projector_host,
        telemetry.projector_port,
    )
    try:
        try:
            await monitor.start()
        except OSError as exc:
            raise ConfigError(f"SHIPSKIP_PROJECTOR_PORT={telemetry.projector_port}: cannot listen ({exc})") from None
        log.info("projector metrics and health on port %d (/metrics, /healthz, /readyz)", monitor.port)
        async with pool.acquire() as conn, conn.transaction():
            await claim_layout(conn, settings.partitions)  # LayoutMismatch: a wrong SHIPSKIP_PARTITIONS stops here
        freeze_heap()
        await _run_partitions(projectors)
    finally:
        await monitor.stop()
        # flush + close, not drain: draining the pull subscription waits out its 30 s drain timeout.
        with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
            await nc.flush(timeout=2)  # the last ack
        await nc.close()
        await pool.close()
        for projector in projectors:
            log.info("projector stopped: partition %s at position %d", projector.partition.name, projector.position)


async def _run_partitions(projectors: list[Projector]) -> None:
    """Run every partition's projector until a signal; one failing (its partition gone) stops them all."""

    def stop_all() -> None:
        for projector in projectors:
            projector.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    tasks = [asyncio.create_task(projector.run(), name=projector.partition.name) for projector in projectors]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        stop_all()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
