"""``shipskip status``: how far the projector is behind the stream, and what else operators watch."""

from datetime import UTC, datetime

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.subjects import VOTES_STREAM
from services.operators.plurals import plural
from services.tally.layout import partition_positions
from services.tally.rebuild.rebuild import rebuild_in_progress
from services.tally.routing import recorded_routing, routing_of


class ComparisonCounts(msgspec.Struct, frozen=True):
    comparison_id: str
    ballots: int
    """Counted ballots holding a verdict."""
    uncounted: int
    """Ballots kept but not counted (counting policy, moderation)."""


class RebuildRun(msgspec.Struct, frozen=True):
    id: int
    kind: str
    comparison_id: str | None
    state: str
    done: int
    total: int
    started_at: datetime
    finished_at: datetime | None
    detail: str


class PartitionLag(msgspec.Struct, frozen=True):
    """How far one projector partition is behind the stream."""

    partition: str
    position: int
    lag_events: int
    lag_seconds: float
    """Age of the oldest event it has not folded."""


class Status(msgspec.Struct, frozen=True):
    stream_head: int
    projector_position: int
    """The position every partition has folded up to (the least of theirs)."""
    lag_events: int
    lag_seconds: float
    dead_letters: int
    ballots: int
    comparisons: int
    voided_voters: int
    """Voided by an operator or forgotten at their own request (both stop counting)."""
    per_comparison: list[ComparisonCounts]
    rebuild_running: bool
    last_run: RebuildRun | None
    partitions: list[PartitionLag] = msgspec.field(default_factory=list)
    """Each projector partition's lag ('tally' alone when unpartitioned)."""
    stream_routing: int | None = None
    """How many partitions the stream routes new events by (None: it does not; 0: by a transform of its own)."""
    routing_recorded: list[int] | None = None
    """[partitions, first sequence] of the routing as the rebuild that set it recorded it."""
    forgotten_voters: int = 0
    """Voters who asked to be forgotten (DELETE /v1/voters/me); counted among the voided too."""


async def read_status(nc: NATS, pool: asyncpg.Pool) -> Status:
    js = nc.jetstream()
    info = await js.stream_info(VOTES_STREAM)
    head = int(info.state.last_seq or 0)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        positions = await partition_positions(conn)
        recorded = await recorded_routing(conn)
        dead = int(await conn.fetchval("select count(*) from dead_letters"))
        voided = int(await conn.fetchval("select count(*) from voided_voters"))
        forgotten = int(await conn.fetchval("select count(*) from forgotten_voters"))
        rows = await conn.fetch(
            "select comparison_id, sum(ship + skip) as ballots, sum(uncounted_ship + uncounted_skip) as uncounted"
            " from tallies group by comparison_id order by comparison_id"
        )
        rebuilding = await rebuild_in_progress(conn)
        run = await conn.fetchrow(
            "select id, kind, comparison_id, state, done, total, started_at, finished_at, detail"
            " from rebuild_runs order by id desc limit 1"
        )
    partitions = [await _partition_lag(js, head, name, seq) for name, seq in positions.items()]
    position = min(positions.values(), default=0)
    lag_seconds = max((p.lag_seconds for p in partitions), default=0.0)
    per_comparison = [ComparisonCounts(r["comparison_id"], int(r["ballots"]), int(r["uncounted"])) for r in rows]
    last_run = RebuildRun(**dict(run)) if run is not None else None
    return Status(
        stream_head=head,
        projector_position=position,
        lag_events=max((p.lag_events for p in partitions), default=head),
        lag_seconds=round(lag_seconds, 3),
        dead_letters=dead,
        ballots=sum(c.ballots for c in per_comparison),
        comparisons=len(per_comparison),
        voided_voters=voided,
        per_comparison=per_comparison,
        rebuild_running=rebuilding,
        last_run=last_run,
        partitions=partitions,
        stream_routing=routing_of(info.config),
        routing_recorded=list(recorded) if recorded is not None else None,
        forgotten_voters=forgotten,
    )


async def _partition_lag(js: JetStreamContext, head: int, name: str, position: int) -> PartitionLag:
    """A partition reading every event lags by the events past its position. One whose consumer reads only its own
    (a routed stream, services/tally/routing.py) lags by those its consumer has not had acknowledged, the oldest
    being the first of its subjects past its position."""
    try:
        consumer = await js.consumer_info(VOTES_STREAM, name)
        filters = consumer.config.filter_subjects or []
    except NotFoundError:
        consumer, filters = None, []
    if consumer is None or len(filters) < 2:
        return PartitionLag(name, position, max(0, head - position), await _age(js, position, [None]))
    events = (consumer.num_pending or 0) + (consumer.num_ack_pending or 0)
    return PartitionLag(name, position, events, await _age(js, position, filters) if events else 0.0)


async def _age(js: JetStreamContext, position: int, subjects: list[str | None]) -> float:
    """The age of the first event past ``position`` on any of ``subjects`` (None: any subject); 0 when none."""
    times = []
    for subject in subjects:
        try:
            if subject is None:
                oldest = await js.get_msg(VOTES_STREAM, position + 1)
            else:
                oldest = await js.get_msg(VOTES_STREAM, position + 1, subject=subject, next=True)
        except NotFoundError:
            continue
        if oldest.time is not None:
            times.append(oldest.time)
    if not times:
        return 0.0
    return round(max(0.0, (datetime.now(UTC) - min(times)).total_seconds()), 3)


def format_status(status: Status) -> str:
    lines = [
        f"stream head          {status.stream_head}",
        f"projector position   {status.projector_position}",
        f"lag                  {plural(status.lag_events, 'event')}, {status.lag_seconds:.1f} s",
    ]
    if len(status.partitions) > 1:
        for p in status.partitions:
            lines.append(
                f"  {p.partition:<20} position {p.position:>10}"
                f"  lag {plural(p.lag_events, 'event')}, {p.lag_seconds:.1f} s"
            )
    if status.stream_routing is not None or status.routing_recorded is not None:
        recorded = status.routing_recorded
        lines.append(
            f"stream routing       by {status.stream_routing} partitions"
            + (f" (recorded: {recorded[0]} from sequence {recorded[1]})" if recorded else " (not recorded)")
        )
    dead = f"dead letters         {status.dead_letters}"
    if status.dead_letters:
        dead += ": inspect with `shipskip dead-letters list`, then retry or discard"
    lines += [
        dead,
        f"ballots counted      {status.ballots} in {plural(status.comparisons, 'comparison')}",
        f"voided voters        {status.voided_voters}"
        + (f" ({status.forgotten_voters} forgotten at their request)" if status.forgotten_voters else ""),
    ]
    for comparison in status.per_comparison:
        lines.append(
            f"  {comparison.comparison_id:<48} {comparison.ballots:>8} counted {comparison.uncounted:>6} uncounted"
        )
    lines.append(f"rebuild in progress  {'yes' if status.rebuild_running else 'no'}")
    run = status.last_run
    if run is None:
        lines.append("rebuild              none yet")
    else:
        scope = run.comparison_id or "all comparisons"
        lines.append(
            f"last {run.kind:<15} #{run.id} {run.state} ({scope}): {run.done}/{plural(run.total, 'event')} {run.detail}"
        )
    return "\n".join(lines)
