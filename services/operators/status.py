"""``shipskip status``: how far the projector is behind the stream, and what else operators watch."""

from datetime import UTC, datetime

import asyncpg
import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from contracts.subjects import VOTES_STREAM
from services.tally.rebuild import rebuild_in_progress


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


class Status(msgspec.Struct, frozen=True):
    stream_head: int
    projector_position: int
    lag_events: int
    lag_seconds: float
    dead_letters: int
    ballots: int
    comparisons: int
    voided_voters: int
    per_comparison: list[ComparisonCounts]
    rebuild_running: bool
    last_run: RebuildRun | None


async def read_status(nc: NATS, pool: asyncpg.Pool) -> Status:
    js = nc.jetstream()
    info = await js.stream_info(VOTES_STREAM)
    head = int(info.state.last_seq or 0)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        position = int(
            await conn.fetchval("select coalesce(max(seq), 0) from projection_position where projection = 'tally'")
        )
        dead = int(await conn.fetchval("select count(*) from dead_letters"))
        voided = int(await conn.fetchval("select count(*) from voided_voters"))
        rows = await conn.fetch(
            "select comparison_id, sum(ship + skip) as ballots, sum(uncounted_ship + uncounted_skip) as uncounted"
            " from tallies group by comparison_id order by comparison_id"
        )
        rebuilding = await rebuild_in_progress(conn)
        run = await conn.fetchrow(
            "select id, kind, comparison_id, state, done, total, started_at, finished_at, detail"
            " from rebuild_runs order by id desc limit 1"
        )
    lag_seconds = 0.0
    if head > position:
        try:
            oldest = await js.get_msg(VOTES_STREAM, position + 1)
            if oldest.time is not None:
                lag_seconds = max(0.0, (datetime.now(UTC) - oldest.time).total_seconds())
        except NotFoundError:
            pass
    per_comparison = [ComparisonCounts(r["comparison_id"], int(r["ballots"]), int(r["uncounted"])) for r in rows]
    last_run = RebuildRun(**dict(run)) if run is not None else None
    return Status(
        stream_head=head,
        projector_position=position,
        lag_events=max(0, head - position),
        lag_seconds=round(lag_seconds, 3),
        dead_letters=dead,
        ballots=sum(c.ballots for c in per_comparison),
        comparisons=len(per_comparison),
        voided_voters=voided,
        per_comparison=per_comparison,
        rebuild_running=rebuilding,
        last_run=last_run,
    )


def format_status(status: Status) -> str:
    lines = [
        f"stream head          {status.stream_head}",
        f"projector position   {status.projector_position}",
        f"lag                  {status.lag_events} events, {status.lag_seconds:.1f} s",
        f"dead letters         {status.dead_letters}",
        f"ballots counted      {status.ballots} in {status.comparisons} comparisons",
        f"voided voters        {status.voided_voters}",
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
        lines.append(f"last {run.kind:<15} #{run.id} {run.state} ({scope}): {run.done}/{run.total} events {run.detail}")
    return "\n".join(lines)
