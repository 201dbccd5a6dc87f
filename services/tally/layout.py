"""The live projection's partition layout, as its position rows record it (see services/tally/partitions.py).

The names of the rows in ``projection_position`` say how many partitions the projection was folded in: ``tally``
alone is one, ``tally-0-of-2`` and ``tally-1-of-2`` are two. A projector claims its layout at start and refuses to
run on another one; a rebuild replaces the rows (``shipskip rebuild --partitions N``) and a projector of the old
layout stops at its next batch, when its row is gone (store.py). So a wrong N fails loudly instead of folding a
comparison in two partitions at once. All of it under one advisory lock, so two layouts never meet.
"""

from services.tally.partitions import LayoutMismatch, layout_names, layout_of
from services.tally.store import Connection

_LAYOUT_LOCK = 0x5A1B_0003
# Partition rows: 'tally' (one partition) and 'tally-<i>-of-<N>'.
_SQL_POSITIONS = (
    "select projection, seq from projection_position"
    " where (projection = 'tally' or projection ~ '^tally-[0-9]+-of-[0-9]+$') order by projection"
)
_SQL_OTHERS = (
    "select projection, seq from projection_position"
    " where (projection = 'tally' or projection ~ '^tally-[0-9]+-of-[0-9]+$') and projection <> all($1::text[])"
)
_SQL_DROP_OTHERS = (
    "delete from projection_position"
    " where (projection = 'tally' or projection ~ '^tally-[0-9]+-of-[0-9]+$') and projection <> all($1::text[])"
)


async def partition_positions(conn: Connection, *, lock: bool = False) -> dict[str, int]:
    """Every partition's position row; with ``lock``, locked in name order (projectors wait on theirs)."""
    rows = await conn.fetch(_SQL_POSITIONS + (" for update" if lock else ""))
    return {row["projection"]: int(row["seq"]) for row in rows}


def layout_count(names: list[str] | dict[str, int]) -> int | None:
    """How many partitions these rows belong to (the largest layout if they disagree; None: no rows)."""
    counts = {count for name in names if (count := layout_of(name)) is not None}
    return max(counts) if counts else None


async def lock_layout(conn: Connection) -> None:
    """Inside a transaction: no other claim or re-partitioning until it ends."""
    await conn.execute("select pg_advisory_xact_lock($1)", _LAYOUT_LOCK)


async def claim_layout(conn: Connection, count: int) -> None:
    """Inside a transaction, at a projector's start: make sure the projection is folded in ``count`` partitions.

    Rows of another layout that never folded anything are dropped (a first start decides); rows that did mean
    the events were counted in another layout, and folding on in this one would count them again.
    """
    await lock_layout(conn)
    mine = layout_names(count)
    await conn.execute(_SQL_DROP_OTHERS + " and seq = 0", mine)
    others = await conn.fetch(_SQL_OTHERS, mine)
    if others:
        folded_in = layout_count([row["projection"] for row in others])
        reached = max(int(row["seq"]) for row in others)
        raise LayoutMismatch(
            f"SHIPSKIP_PARTITIONS={count}, but the projection was folded in {folded_in} partition(s)"
            f" (up to stream position {reached}): set SHIPSKIP_PARTITIONS={folded_in}, or re-partition first"
            f" with `shipskip rebuild --partitions {count}`"
        )
    await conn.execute("delete from partition_changes where partition <> all($1::text[])", mine)
    await conn.execute(
        "insert into projection_position (projection, seq) select unnest($1::text[]), 0 on conflict do nothing", mine
    )


async def set_layout(conn: Connection, count: int, position: int) -> None:
    """Inside a rebuild's swap: every partition of ``count`` at ``position``; any other layout's rows go."""
    mine = layout_names(count)
    await conn.execute(_SQL_DROP_OTHERS, mine)
    await conn.execute("delete from partition_changes where partition <> all($1::text[])", mine)
    await conn.execute(
        "insert into projection_position (projection, seq) select unnest($1::text[]), $2::bigint"
        " on conflict (projection) do update set seq = excluded.seq",
        mine,
        position,
    )
