"""Scratch schemas for the property tests: the projection tables, made like the live ones, in schemas of their own,
on the test session's Postgres; and the stream records and crashes the tests feed a projection with."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from contracts.events import Event, encode_event
from infra.migrate import migrate
from services.tally.store import PROJECTION_TABLES, StreamRecord, expected_subject


class Crash(Exception):
    """The projector died inside the transaction: nothing of the batch is committed."""


def record(seq: int, event: Event) -> StreamRecord:
    """``event`` as the stream holds it at ``seq``, on the subject it is published to."""
    return StreamRecord(seq, expected_subject(event), encode_event(event))


async def _open(database_url: str, schemas: tuple[str, ...]) -> asyncpg.Connection:
    await migrate(database_url)  # the live tables are the template of ours
    conn = await asyncpg.connect(database_url)
    for schema in schemas:
        await conn.execute(f"drop schema if exists {schema} cascade; create schema {schema}")
        for table in PROJECTION_TABLES:
            await conn.execute(f"create table {schema}.{table} (like public.{table} including all)")
    return conn


async def _close(conn: asyncpg.Connection, schemas: tuple[str, ...]) -> None:
    for schema in schemas:
        await conn.execute(f"drop schema if exists {schema} cascade")
    await conn.close()


@contextmanager
def scratch_schemas(database_url: str, *schemas: str) -> Iterator[tuple[asyncio.AbstractEventLoop, asyncpg.Connection]]:
    """A loop and a connection with ``schemas`` made fresh; dropped again on the way out."""
    loop = asyncio.new_event_loop()
    try:
        conn = loop.run_until_complete(_open(database_url, schemas))
        try:
            yield loop, conn
        finally:
            loop.run_until_complete(_close(conn, schemas))
    finally:
        loop.close()
