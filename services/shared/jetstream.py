"""NATS connections and the JetStream objects every service relies on, created or updated idempotently.

nats-py pitfalls handled here (DESIGN.md): ``add_stream`` on a changed config fails, so an existing stream is
updated instead; ``pull_subscribe(config=...)`` ignores the config of an existing durable, so the consumer is
managed explicitly with ``add_consumer`` and bound with ``pull_subscribe_bind``.
"""

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from contracts.subjects import CATALOG_BUCKET, TALLY_CONSUMER, VOTES_STREAM, VOTES_SUBJECTS
from services.shared.config import NatsSettings

log = logging.getLogger(__name__)

PENDING_SIZE = 8 * 1024 * 1024
"""nats-py's buffer of what is not written to the server yet (publishes while reconnecting, or while it does not
drain); past it a publish waits for a flush without a deadline (services/votes/publisher.py refuses first)."""


async def connect(
    nats: NatsSettings,
    name: str,
    *,
    timeout_s: float = 30.0,
    reconnected_cb: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect within ``timeout_s`` (servers may still be starting), then reconnect forever.

    The one way every shipskip process connects, so that ``nats://`` and ``tls://``, a CA of its own, a client
    certificate and each way to log in (``NatsSettings``) are the same path everywhere. ``nats.url`` may list
    several servers, comma-separated (the nodes of a cluster): any one of them will do, and the client moves to
    another when its server goes away.
    """
    client = NATS()

    async def log_disconnected() -> None:
        # nats-py reports a deliberate close as a disconnection too; only a lost server is news.
        if not (client.is_closed or client.is_draining):
            log.warning("nats: disconnected")

    try:
        # With reconnects on, nats-py retries even the first connection forever: the deadline is ours.
        await asyncio.wait_for(
            client.connect(
                nats.urls,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                # While disconnected, publishes must fail fast rather than pile up in memory.
                pending_size=PENDING_SIZE,
                error_cb=_log_error,
                disconnected_cb=log_disconnected,
                reconnected_cb=_chain(_log_reconnected, reconnected_cb),
                tls=tls_context(nats),
                user_credentials=nats.creds_file,
                nkeys_seed=nats.nkey_seed_file,
            ),
            timeout_s,
        )
    except (OSError, nats_errors.Error, TimeoutError) as exc:
        with contextlib.suppress(Exception):
            await client.close()
        raise ConnectionError(f"cannot reach NATS at {_without_password(nats.url)} within {timeout_s:.0f} s") from exc
    return client


def tls_context(nats: NatsSettings) -> ssl.SSLContext | None:
    """The TLS settings, when any are given; else nats-py's default (the system's CAs for ``tls://``)."""
    if nats.ca_file is None and nats.cert_file is None:
        return None
    context = ssl.create_default_context(cafile=nats.ca_file)
    if nats.cert_file is not None:
        context.load_cert_chain(nats.cert_file, nats.key_file)
    return context


def _without_password(url: str) -> str:
    """A NATS URL as it may be logged: the login in it (user and password, or a token) becomes ``***``."""
    shown = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if "@" in parts.netloc:
            parts = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2])  # namedtuple's public API
        shown.append(parts.geturl())
    return ",".join(shown)


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s", exc)


async def _log_reconnected() -> None:
    log.info("nats: reconnected")


def _chain(
    first: Callable[[], Awaitable[None]], second: Callable[[], Awaitable[None]] | None
) -> Callable[[], Awaitable[None]]:
    async def both() -> None:
        await first()
        if second is not None:
            await second()

    return both


_T = TypeVar("_T")

NO_PLACEMENT = 10005
"""JetStream's "no suitable peers for placement": too few servers known for the replicas asked (yet)."""
PLACEMENT_WAIT_S = 30.0


async def until_placed(make: Callable[[], Awaitable[_T]], what: str) -> _T:
    """``make()``, retried while the cluster has too few servers for its replicas: a cluster still forming (its
    nodes find each other after the meta leader is elected) or a node coming back. Other errors at once."""
    deadline = asyncio.get_running_loop().time() + PLACEMENT_WAIT_S
    while True:
        try:
            return await make()
        except APIError as exc:
            if exc.err_code != NO_PLACEMENT or asyncio.get_running_loop().time() > deadline:
                raise
            log.info("%s: %s; waiting for the cluster's servers", what, exc.description)
            await asyncio.sleep(0.5)


def votes_stream_config(duplicate_window_s: float, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=VOTES_STREAM,
        subjects=[VOTES_SUBJECTS],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        duplicate_window=duplicate_window_s,
        num_replicas=replicas,
    )


async def ensure_votes_stream(js: JetStreamContext, duplicate_window_s: float, replicas: int = 1) -> None:
    """Create the stream with ``replicas`` copies, or update it; an update keeps more copies than ``replicas``.

    Never scaling down means processes started with different SHIPSKIP_STREAM_REPLICAS cannot undo each other, and
    a stream an operator scaled up by hand keeps its copies.
    """
    try:
        info = await js.stream_info(VOTES_STREAM)
    except NotFoundError:
        await until_placed(lambda: js.add_stream(votes_stream_config(duplicate_window_s, replicas)), VOTES_STREAM)
        return
    current = info.config.num_replicas or 1
    if replicas > current:
        log.info("stream %s: %d replicas, raising to %d", VOTES_STREAM, current, replicas)
    config = votes_stream_config(duplicate_window_s, max(current, replicas))
    # The partition routing is the rebuild's to set (services/tally/routing.py); an update without it would drop it.
    config.subject_transform = info.config.subject_transform
    await until_placed(lambda: js.update_stream(config), VOTES_STREAM)


def tally_consumer_config(
    max_ack_pending: int, name: str = TALLY_CONSUMER, filters: list[str] | None = None
) -> ConsumerConfig:
    """A projector partition's durable consumer (``name``: the partition's, services/tally/partitions.py), reading
    ``filters`` (default all of VOTES as published; services/tally/routing.py picks a partition's)."""
    filters = filters or [VOTES_SUBJECTS]
    return ConsumerConfig(
        durable_name=name,
        deliver_policy=DeliverPolicy.ALL,
        # Acking the last message of a batch acks the whole batch: one ack per commit.
        ack_policy=AckPolicy.ALL,
        ack_wait=30,
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
    )


async def ensure_tally_consumer(
    js: JetStreamContext, max_ack_pending: int, name: str = TALLY_CONSUMER, filters: list[str] | None = None
) -> None:
    config = tally_consumer_config(max_ack_pending, name, filters)
    try:
        info = await js.consumer_info(VOTES_STREAM, name)
    except NotFoundError:
        await js.add_consumer(VOTES_STREAM, config)
        return
    if filters is None:  # the projector's choice stands (services/tally/routing.py): a start-up must not undo it
        config.filter_subject, config.filter_subjects = info.config.filter_subject, info.config.filter_subjects
    # Creating a durable with the same name updates its mutable fields on nats-server >= 2.10.
    await js.add_consumer(VOTES_STREAM, config)


async def catalog_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    """The catalogue bucket, created with ``replicas`` copies when missing, raised to them when it has fewer."""
    try:
        bucket = await js.key_value(CATALOG_BUCKET)
    except BucketNotFoundError:
        return await until_placed(
            lambda: js.create_key_value(bucket=CATALOG_BUCKET, history=16, replicas=replicas), CATALOG_BUCKET
        )
    backing = "KV_" + CATALOG_BUCKET
    config = (await js.stream_info(backing)).config
    if (config.num_replicas or 1) < replicas:
        log.info("bucket %s: %d replicas, raising to %d", CATALOG_BUCKET, config.num_replicas or 1, replicas)
        config.num_replicas = replicas
        await until_placed(lambda: js.update_stream(config), CATALOG_BUCKET)
    return bucket


async def ensure_jetstream_objects(nats: NatsSettings, replicas: int, duplicate_window_s: float = 120.0) -> str:
    """The VOTES stream and the catalogue bucket, with ``replicas`` copies (``shipskip migrate``); what they have."""
    nc = await connect(nats, "shipskip-migrate", timeout_s=30)
    try:
        js = nc.jetstream()
        await ensure_votes_stream(js, duplicate_window_s, replicas)
        await catalog_bucket(js, replicas)
        stream = await js.stream_info(VOTES_STREAM)
        bucket = await js.stream_info("KV_" + CATALOG_BUCKET)
    finally:
        await nc.close()
    return (
        f"stream {VOTES_STREAM}: {stream.config.num_replicas or 1} replicas; "
        f"catalogue bucket: {bucket.config.num_replicas or 1} replicas"
    )
