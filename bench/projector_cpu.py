"""CPU per vote of the projector's fold-and-write path, without NATS (not part of ``make bench``).

    .venv/bin/python -m bench.projector_cpu [VOTES] [ROUNDS]

Starts embedded servers in a temporary folder, migrates, then folds VOTES casts (default 100,000; every one a
change of mind of one of 20,000 voters on one comparison, stamped 10 ms apart) through ``Projection.apply_batch``
in batches of 500, each in its own transaction on one connection, as a projector does, ROUNDS times (default 3).
Each round prints this process's CPU per vote (decode, fold, building the statements, asyncpg) and the Postgres
backend's (read from /proc: the server runs on this machine). Run it in two checkouts for an A/B comparison.
"""

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.one_path import cpu_s, run_on_embedded_servers
from contracts.events import Origin, VoteCast, encode_event
from contracts.subjects import votes_subject
from infra.migrate import migrate
from infra.stack.servers import ServerAddresses
from services.tally.pools import folding_pool
from services.tally.store import Projection, StreamRecord

_COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
_TOOLS = ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1")
_VOTERS = 20_000
_BATCH = 500


def _backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def _records(first_seq: int, count: int, start: datetime) -> list[StreamRecord]:
    subject = votes_subject(_COMPARISON)
    records = []
    for i in range(count):
        seq = first_seq + i
        event = VoteCast(
            event_id=f"e{seq}", comparison_id=_COMPARISON, tool_id=_TOOLS[i % 2],
            verdict="ship" if (seq // _VOTERS) % 2 == 0 else "skip", voter_id=f"{i % _VOTERS:064x}",
            at=start + timedelta(milliseconds=10 * seq), origin=Origin(client=f"client-{i % 97}"),
        )  # fmt: skip
        records.append(StreamRecord(seq, subject, encode_event(event)))
    return records


async def _measure(servers: ServerAddresses, count: int, rounds: int) -> None:
    await migrate(servers.database_url)
    pool = await folding_pool(servers.database_url, max_size=1)
    projection = Projection(ballots_per_client_day=10**9)
    backend = int(await pool.fetchval("select pg_backend_pid()"))
    start = datetime(2026, 12, 1, tzinfo=UTC)
    seq = 1
    for round_ in range(rounds + 1):  # the first round fills the tables: not shown
        records = _records(seq, count, start)
        seq += count
        cpu, pg, wall = cpu_s(), _backend_cpu_s(backend), time.perf_counter()
        for i in range(0, count, _BATCH):
            async with pool.acquire() as conn, conn.transaction():
                await projection.apply_batch(conn, records[i : i + _BATCH])
        cpu, pg, wall = cpu_s() - cpu, _backend_cpu_s(backend) - pg, time.perf_counter() - wall
        if round_:
            print(
                f"round {round_}: {count} votes, projector {1e6 * cpu / count:.1f} us/vote,"
                f" postgres {1e6 * pg / count:.1f} us/vote, {count / wall:,.0f} votes/s"
            )
    await pool.close()


if __name__ == "__main__":
    run_on_embedded_servers("projector-cpu", lambda s, c, r: _measure(s, c, r), 100_000)
