"""The soak's last word: after the projector drained, are the tallies exactly the votes that were accepted?

Four accounts of the soak's comparisons, each taken on its own:
- the project's fold over the stream (``StreamReplay`` + ``fold`` + ``tallies_of``, as ``shipskip verify`` does);
- the live tallies in Postgres;
- the read API's figures;
- the load generator's own record of the ballots its accepted (and unchanged) votes left.
They must all be equal, the counting policy must have kept nothing uncounted, and the stream must hold exactly
the events answered 202: each once, none other.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats

from contracts.events import VoteCast, VoteRetracted
from contracts.http import CommunityBatch
from contracts.subjects import VOTES_STREAM
from services.tally.fold import FoldState, fold
from services.tally.rebuild.rebuild import tallies_of
from services.tally.rebuild.replay import StreamReplay
from services.tally.store import StreamRecord, decode_records, read_position, read_tallies

Tallies = dict[str, dict[str, tuple[int, int]]]
"""comparison -> tool -> (ship, skip)"""


class Exactness(msgspec.Struct):
    exact: bool
    """Everything below agrees."""
    stream_position: int
    projector_position: int
    accepted: int
    """Event ids answered 202, as the load generator recorded them."""
    stream_events: int
    """Vote events of the soak's comparisons in the stream."""
    missing: int
    """Answered 202, not in the stream."""
    unexpected: int
    """In the stream, never answered 202."""
    repeated: int
    """Events in the stream more than once."""
    uncounted: int
    """Ballots the fold kept uncounted (the counting policy is out of reach in the bench: must be 0)."""
    unknown_votes: int
    """Votes the generator gave up on, whose ballots it does not know."""
    fold_equals_generator: bool
    postgres_equals_fold: bool
    read_api_equals_fold: bool
    read_api_wait_s: float
    """How long after the drain the read API's figures took to equal the fold (or the time waited in vain)."""
    fold: Tallies
    generator: Tallies
    postgres: Tallies
    read_api: Tallies


def _zeroed(comparisons: dict[str, tuple[str, str]]) -> dict[str, dict[str, tuple[int, int]]]:
    return {c: {tool: (0, 0) for tool in tools} for c, tools in comparisons.items()}


async def fold_stream(
    nats_url: str, comparisons: dict[str, tuple[str, str]], ballots_per_client_day: int
) -> tuple[int, Tallies, int, Counter[str]]:
    """(the stream's last sequence, tallies by the project's fold, uncounted ballots, vote event ids)."""
    nc = await nats.connect(nats_url, name="shipskip-bench-soak-check")
    try:
        js = nc.jetstream()
        last = int((await js.stream_info(VOTES_STREAM)).state.last_seq or 0)
        tallies = _zeroed(comparisons)
        uncounted = 0
        ids: Counter[str] = Counter()
        for comparison_id in comparisons:
            state = FoldState()

            async def fold_batch(records: list[StreamRecord], state: FoldState = state) -> None:
                events, _ = decode_records(records)
                ids.update(e.event_id for _, e in events if isinstance(e, VoteCast | VoteRetracted))
                outcome = fold(events, state, ballots_per_client_day=ballots_per_client_day)
                state.absorb(outcome)

            replay = StreamReplay(nc, comparison_id)
            await replay.open()
            try:
                await replay.fold_until(last, fold_batch)
            finally:
                await replay.close()
            for (c, tool), counts in tallies_of(state).items():
                if c == comparison_id:
                    tallies[c][tool] = (counts.ship, counts.skip)
                    uncounted += counts.uncounted_ship + counts.uncounted_skip
        return last, tallies, uncounted, ids
    finally:
        await nc.close()


async def postgres_tallies(database_url: str, comparisons: dict[str, tuple[str, str]]) -> tuple[int, Tallies, int]:
    """(the projector's position, the live tallies, uncounted ballots)."""
    conn = await asyncpg.connect(database_url)
    try:
        position = await read_position(conn)
        rows = await read_tallies(conn, list(comparisons))
    finally:
        await conn.close()
    tallies = _zeroed(comparisons)
    uncounted = 0
    for (c, tool), counts in rows.items():
        tallies.setdefault(c, {})[tool] = (counts.ship, counts.skip)
        uncounted += counts.uncounted_ship + counts.uncounted_skip
    return position, tallies, uncounted


_batch = msgspec.json.Decoder(CommunityBatch)


async def served_tallies(read_url: str, comparison_ids: Iterable[str]) -> tuple[Tallies, dict[str, int]]:
    """The read API's figures and positions of these comparisons."""
    query = "&".join(f"comparison_id={c}" for c in comparison_ids)
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(f"{read_url}/v1/community?{query}")
    response.raise_for_status()
    batch = _batch.decode(response.content)
    tallies = {c.comparison_id: {t.tool_id: (t.ship, t.skip) for t in c.tools} for c in batch.comparisons}
    return tallies, {c.comparison_id: c.position for c in batch.comparisons}


def accepted_ids(path: Path) -> Counter[str]:
    return Counter(line for line in path.read_text().splitlines() if line)


async def check_exact(
    *,
    nats_url: str,
    database_url: str,
    read_url: str,
    comparisons: dict[str, tuple[str, str]],
    ballots_per_client_day: int,
    generator: Tallies,
    accepted_file: Path,
    unknown_votes: int,
    read_timeout_s: float = 30.0,
) -> Exactness:
    """Compare the four accounts; call it once the projector has folded the whole stream."""
    last, folded, uncounted, ids = await fold_stream(nats_url, comparisons, ballots_per_client_day)
    position, postgres, pg_uncounted = await postgres_tallies(database_url, comparisons)
    started = time.perf_counter()
    served, _ = await served_tallies(read_url, comparisons)
    while served != folded and time.perf_counter() - started < read_timeout_s:
        await asyncio.sleep(0.1)
        served, _ = await served_tallies(read_url, comparisons)
    waited = time.perf_counter() - started
    accepted = accepted_ids(accepted_file)
    expected = {c: {tool: (ship, skip) for tool, (ship, skip) in tools.items()} for c, tools in generator.items()}
    missing = sum((accepted - ids).values())
    unexpected = sum((ids - accepted).values())
    repeated = sum(count - 1 for count in ids.values() if count > 1)
    checks = (
        expected == folded,
        postgres == folded,
        served == folded,
        missing == unexpected == repeated == 0,
        uncounted == pg_uncounted == 0,
        unknown_votes == 0,
        position >= last,
    )
    return Exactness(
        exact=all(checks),
        stream_position=last,
        projector_position=position,
        accepted=sum(accepted.values()),
        stream_events=sum(ids.values()),
        missing=missing,
        unexpected=unexpected,
        repeated=repeated,
        uncounted=uncounted + pg_uncounted,
        unknown_votes=unknown_votes,
        fold_equals_generator=expected == folded,
        postgres_equals_fold=postgres == folded,
        read_api_equals_fold=served == folded,
        read_api_wait_s=waited,
        fold=folded,
        generator=expected,
        postgres=postgres,
        read_api=served,
    )
