"""A rebuild's two ways of folding (in memory then COPY, or through the tables) write what the projector wrote.

The stream holds everything a fold decides on: casts from a few client addresses past the counting policy's
quota, changes, retractions before and after casts, events stored twice, voids (and casts after them), an
undecodable message and one on the wrong subject. ``SHIPSKIP_REBUILD_MEMORY_BALLOTS`` picks the path: 0 folds
everything through the tables, a small number stops the in-memory pass part way, the default holds it all.
"""

import asyncio
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts.events import Event, Origin, VoteCast, VoteRetracted, VoterForgotten, VoterVoided, encode_event
from contracts.subjects import MODERATION_SUBJECT, votes_subject
from infra.stack.servers import ServerAddresses
from services.tally.store import expected_subject
from tests.support import (
    DEMO_TOOLS,
    Pipeline,
    projected_position,
    publish_raw,
    run_cli,
    run_cli_meanwhile,
    running_pipeline,
    stream_last_seq,
    wait_until,
)

TOOLS = DEMO_TOOLS
TOOLS_OF_LLAMA = ("llama-4-scout-vs-windsurf-swe-1", "windsurf-swe-1")
START = datetime(2026, 11, 23, 23, 50, tzinfo=UTC)  # the stream crosses midnight: the quota's day changes
TABLES = {
    "ballots": "comparison_id, tool_id, voter_id",
    "tallies": "comparison_id, tool_id",
    "client_quotas": "comparison_id, client, day",
    "voided_voters": "voter_id",
    "forgotten_voters": "voter_id",
    "tally_history": "comparison_id, tool_id, minute",
    "dead_letters": "seq",
}
Snapshot = dict[str, list[tuple[Any, ...]]]


def mixed_stream(count: int, seed: int, first: int = 0) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    voters = [f"{seed:04x}{i:028x}" for i in range(300)]
    clients = [f"client-{i}" for i in range(6)]
    events: list[Event] = []
    messages: list[tuple[str, bytes]] = []
    for i in range(first, first + count):
        at = START + timedelta(seconds=i)
        voter = rng.choice(voters)
        roll = rng.random()
        if events and roll < 0.05:
            event = rng.choice(events[-200:])  # stored again
        elif roll < 0.06:
            event = VoterVoided(f"v{seed}-{i}", voter, "test ring", at)
        elif roll < 0.07:
            event = VoterForgotten(f"f{seed}-{i}", voter, at)
        else:
            comparison = rng.choice(list(TOOLS))
            tool = rng.choice(TOOLS[comparison])
            origin = Origin(client=rng.choice(clients))
            if roll < 0.2:
                event = VoteRetracted(f"r{seed}-{i}", comparison, tool, voter, at, origin)
            else:
                event = VoteCast(f"c{seed}-{i}", comparison, tool, rng.choice(["ship", "skip"]), voter, at, origin)
        events.append(event)
        messages.append((expected_subject(event), encode_event(event)))
    return messages


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    with running_pipeline(servers, log_dir, SHIPSKIP_BALLOTS_PER_CLIENT_DAY="40") as running:
        yield running


async def snapshot(servers: ServerAddresses) -> Snapshot:
    conn = await asyncpg.connect(servers.database_url)
    try:
        tables: Snapshot = {}
        for table, key in TABLES.items():
            columns = "seq, subject, reason" if table == "dead_letters" else "*"
            # A minute whose changes a void took back to zero keeps its row live; a rebuild writes none.
            where = "where ship <> 0 or skip <> 0" if table == "tally_history" else ""
            sql = f"select {columns} from {table} {where} order by {key}"  # noqa: S608 (names from TABLES)
            tables[table] = [tuple(r) for r in await conn.fetch(sql)]
        return tables
    finally:
        await conn.close()


def wait_for_projector(servers: ServerAddresses) -> None:
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head, timeout=120, interval=0.2)


@pytest.fixture(scope="module")
def projected(pipeline: Pipeline, servers: ServerAddresses) -> Snapshot:
    """The mixed stream folded by the live projector: every table as it left them."""
    messages = mixed_stream(6000, seed=11)
    misplaced = VoteCast("misplaced", *TOOLS_OF_LLAMA, "ship", "f" * 32, START)  # a vote on the moderation subject
    messages[100:100] = [
        (votes_subject(TOOLS_OF_LLAMA[0]), b"{not json"),
        (MODERATION_SUBJECT, encode_event(misplaced)),
    ]
    asyncio.run(publish_raw(servers, messages))
    wait_for_projector(servers)
    tables = asyncio.run(snapshot(servers))
    assert len(tables["dead_letters"]) == 2
    assert tables["voided_voters"], "the stream voids voters"
    assert any(not counted for *_, counted, _ in tables["ballots"]), "some ballots are past the quota or voided"
    assert any(verdict is None for *_, verdict, _, _, _ in tables["ballots"]), "some ballots are retracted"
    assert tables["tally_history"], "the history projection has rows"
    assert tables["forgotten_voters"], "the stream forgets voters"
    return tables


@pytest.mark.parametrize("memory_ballots", ["0", "150", "2000000"], ids=["tables", "memory-then-tables", "memory"])
def test_every_way_of_rebuilding_writes_the_rows_the_projector_wrote(
    pipeline: Pipeline, servers: ServerAddresses, projected: Snapshot, memory_ballots: str
) -> None:
    rebuilt = run_cli({**pipeline.env, "SHIPSKIP_REBUILD_MEMORY_BALLOTS": memory_ballots}, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert asyncio.run(snapshot(servers)) == projected


def test_votes_arriving_during_a_rebuild_with_the_projector_behind_are_all_counted(
    pipeline: Pipeline, servers: ServerAddresses, projected: Snapshot
) -> None:
    # The projector stopped: the live position stays behind while the replay reads on past its targets, so what
    # the replay holds unfolded at the swap must not be taken as folded.
    pipeline.processes["projector"].stop()

    def keep_voting(ended: threading.Event) -> None:
        for n in range(1000):  # until the rebuild has ended, and a few chunks at least
            asyncio.run(publish_raw(servers, mixed_stream(200, seed=100 + n, first=10_000 + 200 * n)))
            if n >= 3 and ended.is_set():
                return

    rebuilt = run_cli_meanwhile(pipeline.env, keep_voting, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    pipeline.start("projector")
    wait_for_projector(servers)
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "0 differences" in verified.stdout
    after = asyncio.run(snapshot(servers))
    # The same rows once more from a rebuild of the whole stream, now that nothing moves.
    assert run_cli(pipeline.env, "rebuild").returncode == 0
    assert asyncio.run(snapshot(servers)) == after


async def table_shapes(servers: ServerAddresses) -> list[tuple[Any, ...]]:
    """Every index and constraint of the live projection tables, by name and definition, and their storage
    parameters."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        indexes = await conn.fetch(
            "select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'"
            " and tablename = any($1::text[]) order by 1, 2",
            list(TABLES),
        )
        constraints = await conn.fetch(
            "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint"
            " where connamespace = 'public'::regnamespace and conrelid::regclass::text = any($1::text[]) order by 1, 2",
            list(TABLES),
        )
        options = await conn.fetch(
            "select relname, reloptions from pg_class where relnamespace = 'public'::regnamespace"
            " and relname = any($1::text[]) order by 1",
            list(TABLES),
        )
        return [tuple(row) for row in [*indexes, *constraints, *options]]
    finally:
        await conn.close()


def test_the_rebuilt_tables_take_the_live_ones_names_and_shape(
    pipeline: Pipeline, servers: ServerAddresses, projected: Snapshot
) -> None:
    # The swap moves the rebuilt tables into the live schema: their indexes are named as the migrations named them.
    before = asyncio.run(table_shapes(servers))
    assert (
        "ballots",
        "ballots_by_voter",
        "CREATE INDEX ballots_by_voter ON public.ballots USING btree (voter_id)",
    ) in before
    assert ("ballots", ["fillfactor=80"]) in before  # room for HOT updates (migration 0005)
    for _ in range(2):
        rebuilt = run_cli(pipeline.env, "rebuild")
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert asyncio.run(table_shapes(servers)) == before
