"""What a committed batch changed, as change notices: recorded in the batch's own transaction.

Inside the transaction that folded the batch, ``record_changes`` moves each changed comparison's position to the
batch's position and reads its absolute counts back, so a notice's counts are exactly the committed state at its
position. The projector publishes the notices once the transaction has committed.

Notices are chained per partition (``partition_changes``): a notice's ``previous`` is the position of the last
batch of the same partition that changed anything. Partitions commit independently, so their positions do not
rise in commit order, and one chain over all of them could hide a missed notice.
"""

from collections.abc import Sequence

from contracts.notices import TallyChanged, ToolTally
from services.tally.store import POSITION_ROW, BatchResult, Connection, read_tallies


async def last_change_position(conn: Connection, partition: str = POSITION_ROW) -> int:
    """The position of the partition's last batch that changed any comparison (0 when none did)."""
    seq = await conn.fetchval("select seq from partition_changes where partition = $1", partition)
    return int(seq) if seq is not None else 0


async def partition_change_positions(conn: Connection) -> dict[str, int]:
    """Per partition, the position of its last batch that changed anything: where each notice chain stands."""
    rows = await conn.fetch("select partition, seq from partition_changes")
    return {r["partition"]: int(r["seq"]) for r in rows}


async def comparison_positions(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch("select comparison_id, seq from comparison_positions")
    return {r["comparison_id"]: int(r["seq"]) for r in rows}


async def record_changes(conn: Connection, result: BatchResult, partition: str = POSITION_ROW) -> list[TallyChanged]:
    """Call inside the batch's transaction, after it was folded; returns one notice per changed comparison."""
    changed: Sequence[str] = sorted(result.outcome.comparisons())
    if not changed:
        return []
    previous = await last_change_position(conn, partition)
    await conn.execute(
        "insert into partition_changes (partition, seq) values ($1, $2)"
        " on conflict (partition) do update set seq = excluded.seq",
        partition,
        result.position,
    )
    await conn.execute(
        "insert into comparison_positions (comparison_id, seq) select unnest($1::text[]), $2::bigint"
        " on conflict (comparison_id) do update set seq = excluded.seq",
        list(changed),
        result.position,
    )
    tallies = await read_tallies(conn, changed)
    tools: dict[str, list[ToolTally]] = {comparison_id: [] for comparison_id in changed}
    for (comparison_id, tool_id), counts in sorted(tallies.items()):
        tools[comparison_id].append(ToolTally(tool_id=tool_id, ship=counts.ship, skip=counts.skip))
    return [
        TallyChanged(comparison_id=c, position=result.position, previous=previous, tools=tools[c], partition=partition)
        for c in changed
    ]
