"""Routing the stream by partition, so that each partition's consumer receives only its own events.

``shipskip rebuild --partitions N`` (N > 1) gives the VOTES stream a subject transform: from then on an event
published on ``votes.v1.<last>`` is stored as ``votes.v1.r<N>.<i>.<last>``, ``i`` being nats-server's
``{{partition(N,1)}}`` of the last token, the very partition services/tally/partitions.py computes. Partition
``i``'s consumer then filters on its routed subjects, the moderation subject's (every partition needs the voids),
and the published form ``votes.v1.*`` (events stored before the routing). The rebuild records in Postgres the
stream sequence the routing holds from, in the transaction that swaps the layout in.

A consumer filters that narrowly only while it is safe: the stream routes by the projection's N, Postgres says
it has since a sequence at or below the partition's next, and so every event past the partition's position is
either routed by N or published before any routing. Otherwise (no routing yet, a rebuild that changed the routing
and failed, a stream routed by hand) the consumer reads every event, ``votes.v1.>``, and the projector picks its
partition's by their comparison: always right, only slower. The routing changes nothing else: every reader takes
an event's comparison from the last token of its subject (contracts/subjects.py, ``published_subject``).
"""

import re

from nats.js import JetStreamContext
from nats.js.api import StreamConfig, SubjectTransform

from contracts.subjects import VOTES_ALL, VOTES_STREAM, VOTES_SUBJECT_PREFIX, VOTES_SUBJECTS
from services.tally.partitions import MODERATION_TOKEN, Partition, partition_of
from services.tally.store import Connection

_ROUTED_DEST = re.compile(r"votes\.v1\.r(\d+)\.\{\{partition\((\d+),1\)\}\}\.\{\{wildcard\(1\)\}\}")

OTHER_ROUTING = 0
"""A subject transform this code did not set."""


def routing_transform(partitions: int) -> SubjectTransform:
    return SubjectTransform(
        src=VOTES_SUBJECTS,
        dest=f"{VOTES_SUBJECT_PREFIX}r{partitions}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}",
    )


def routing_of(config: StreamConfig) -> int | None:
    """How many partitions the stream routes new events by; None: stored as published."""
    transform = config.subject_transform
    if transform is None or not transform.dest:
        return None
    match = _ROUTED_DEST.fullmatch(transform.dest)
    if match is None or transform.src != VOTES_SUBJECTS or match.group(1) != match.group(2):
        return OTHER_ROUTING
    return int(match.group(1))


async def stream_routing(js: JetStreamContext) -> int | None:
    return routing_of((await js.stream_info(VOTES_STREAM)).config)


async def route_stream(js: JetStreamContext, partitions: int) -> int:
    """Route new events by ``partitions`` (1: store them as published); the first sequence that holds from."""
    config = (await js.stream_info(VOTES_STREAM)).config
    config.subject_transform = routing_transform(partitions) if partitions > 1 else None  # None: no transform
    info = await js.update_stream(config)
    return int(info.state.last_seq or 0) + 1


async def recorded_routing(conn: Connection) -> tuple[int, int] | None:
    """(partitions, first sequence) of the routing a rebuild set, as Postgres records it."""
    row = await conn.fetchrow("select partitions, since from stream_routing")
    return (int(row["partitions"]), int(row["since"])) if row is not None else None


async def record_routing(conn: Connection, partitions: int, since: int) -> None:
    """Inside a rebuild's swap; one partition means no routing."""
    await conn.execute("delete from stream_routing")
    if partitions > 1:
        await conn.execute("insert into stream_routing (partitions, since) values ($1, $2)", partitions, since)


def consumer_filters(
    partition: Partition, routing: int | None, recorded: tuple[int, int] | None, position: int
) -> list[str]:
    """The subjects partition's consumer reads, from ``position`` on (see the module's docstring)."""
    count = partition.count
    if routing is None and recorded is None:
        return [VOTES_SUBJECTS] if count == 1 else [VOTES_ALL]
    if count == 1 or routing != count or recorded is None or recorded[0] != count or position + 1 < recorded[1]:
        return [VOTES_ALL]
    prefix = f"{VOTES_SUBJECT_PREFIX}r{count}."
    filters = [VOTES_SUBJECTS, f"{prefix}{partition.index}.*"]
    moderation = partition_of(MODERATION_TOKEN, count)
    if moderation != partition.index:
        filters.append(f"{prefix}{moderation}.{MODERATION_TOKEN}")
    return filters
