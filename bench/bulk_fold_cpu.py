"""CPU of a rebuild's first pass in memory, without servers (not part of ``make bench``).

    .venv/bin/python -m bench.bulk_fold_cpu [EVENTS] [ROUNDS]

Folds EVENTS synthetic casts (default 1,000,000: 200,000 ballots of 100,000 voters on one comparison, every vote a
change of mind, stamped 10 ms apart) through ``BulkFold.take`` in batches of 5,000, as the rebuild's fold worker
does, then builds the rows it would COPY (``rows``), ROUNDS times (default 3); prints the CPU time of each. Run it
in two checkouts for an A/B comparison of the fold worker's work.
"""

import gc
import sys
import time
from datetime import UTC, datetime, timedelta

from contracts.events import Origin, VoteCast, encode_event
from contracts.subjects import votes_subject
from services.tally.rebuild.bulk_load import BulkFold

_COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
_TOOLS = ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1")
_VOTERS = 100_000
_BATCH = 5000


def _records(count: int) -> list[tuple[int, str, bytes]]:
    subject = votes_subject(_COMPARISON)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    records = []
    for seq in range(1, count + 1):
        i = seq - 1
        event = VoteCast(
            event_id=f"e{seq}", comparison_id=_COMPARISON, tool_id=_TOOLS[(i // _VOTERS) % 2],
            verdict="ship" if (i // (2 * _VOTERS)) % 2 == 0 else "skip", voter_id=f"{i % _VOTERS:032x}",
            at=start + timedelta(milliseconds=10 * seq), origin=Origin(client=f"client-{i % 97}"),
        )  # fmt: skip
        records.append((seq, subject, encode_event(event)))
    return records


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    records = _records(count)
    for round_ in range(1, rounds + 1):
        bulk = BulkFold(ballots_per_client_day=2_000_000_000)
        started = time.process_time()
        for i in range(0, count, _BATCH):
            bulk.take(records[i : i + _BATCH])
            gc.freeze()  # as the worker does after each batch
        folded = time.process_time()
        rows = bulk.rows()
        done = time.process_time()
        print(
            f"round {round_}: {count:,} events, take {folded - started:.2f} s CPU"
            f" ({1e6 * (folded - started) / count:.2f} us an event), rows {done - folded:.2f} s CPU,"
            f" {len(rows['ballots']):,} ballots",
            flush=True,
        )
        del bulk, rows
        gc.unfreeze()
        gc.collect()


if __name__ == "__main__":
    main()
