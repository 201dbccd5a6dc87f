"""A catalogue load as operators make it (``shipskip catalog load``, ``POST /admin/catalog``): check the file, show
what it changes against the live catalogue, refuse to remove comparisons that have votes unless forced, load.

Every refusal is a ``LoadRefused``: one line naming what is wrong, with the CLI's exit code and the admin API's
status. Whether a comparison has votes is asked of Postgres' tallies (the projector is at most a second behind
the stream); when Postgres cannot answer, a load that removes comparisons is refused unless forced.
"""

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import msgspec
from nats.js import JetStreamContext

from contracts.catalog import Catalog, CatalogError, decode_catalog
from services.shared.catalog_store import CatalogBusy, CatalogDiff, LoadReport, Progress, apply_load, plan_load
from services.tally.store import Connection

MAX_FILE_BYTES = 256 * 1024 * 1024
"""A catalogue file larger than this is refused before it is read (50,000 comparisons and 10,000 tools with
full text take about 40 MB)."""
SHOWN = 10
"""Ids listed per kind of change; the rest are counted."""

VotesOf = Callable[[list[str]], Awaitable[dict[str, int]]]
"""Ballots held by each of these comparisons (those with none left out)."""


class LoadOutcome(msgspec.Struct):
    """What a load changed (or, checked only, would change)."""

    previous: int
    """The live catalogue's revision when the load read it (0: none loaded)."""
    diff: CatalogDiff
    voted: dict[str, int]
    """Comparisons removed that hold ballots, and how many."""
    checked_only: bool
    refused: str | None = None
    """Checked only: why loading it as given would be refused (null: it would load)."""
    revision: int | None = None
    """The revision the load committed (the previous one when nothing changed); None when only checked."""
    written: int = 0
    seconds: float = 0.0


class LoadRefused(Exception):
    def __init__(
        self, message: str, exit_code: int, status: int, error: str, outcome: LoadOutcome | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.error = error
        self.outcome = outcome
        """What the load would have changed, when it got as far as working that out."""


def read_catalog_file(path: Path) -> Catalog:
    """The catalogue in ``path``, checked; a LoadRefused naming the file and the fault otherwise."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise LoadRefused(f"{path}: is a folder, not a catalogue file", 1, 422, "invalid_catalogue")
        if size > MAX_FILE_BYTES:
            raise LoadRefused(
                f"{path}: {size / 1e6:,.0f} MB; the largest catalogue taken is {MAX_FILE_BYTES / 1e6:,.0f} MB",
                1,
                413,
                "catalogue_too_large",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise LoadRefused(f"{path}: {exc.strerror or exc}", 1, 422, "invalid_catalogue") from None
    return parse_catalog(data, f"{path}: ")


def parse_catalog(data: bytes, where: str = "") -> Catalog:
    try:
        return decode_catalog(data)
    except CatalogError as exc:
        raise LoadRefused(f"{where}{exc}", 1, 422, "invalid_catalogue") from None


def postgres_votes(database_url: str) -> VotesOf:
    async def votes_of(comparison_ids: list[str]) -> dict[str, int]:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            return await votes_in(conn, comparison_ids)
        finally:
            await conn.close()

    return votes_of


def pool_votes(pool: asyncpg.Pool) -> VotesOf:
    async def votes_of(comparison_ids: list[str]) -> dict[str, int]:
        async with pool.acquire() as conn:
            return await votes_in(conn, comparison_ids)

    return votes_of


async def votes_in(conn: Connection, comparison_ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "select comparison_id, sum(ship + skip + uncounted_ship + uncounted_skip) as ballots from tallies"
        " where comparison_id = any($1::text[]) group by comparison_id"
        " having sum(ship + skip + uncounted_ship + uncounted_skip) > 0",
        comparison_ids,
    )
    return {row["comparison_id"]: int(row["ballots"]) for row in rows}


def _named(votes: dict[str, int]) -> str:
    listed = sorted(votes.items(), key=lambda item: (-item[1], item[0]))
    named = ", ".join(f"{cid} ({n} ballot{'s' if n != 1 else ''})" for cid, n in listed[:SHOWN])
    return named + (f" and {len(listed) - SHOWN} more" if len(listed) > SHOWN else "")


async def load(
    js: JetStreamContext,
    catalog: Catalog,
    votes_of: VotesOf,
    *,
    max_payload: int,
    replicas: int = 1,
    check: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> LoadOutcome:
    """Plan, check, and (unless ``check``) load; LoadRefused when the load must not or cannot go ahead."""
    try:
        plan = await plan_load(js, catalog, max_payload)
    except CatalogError as exc:
        raise LoadRefused(str(exc), 1, 422, "invalid_catalogue") from None
    removed = plan.diff.comparisons_removed
    outcome = LoadOutcome(previous=plan.previous, diff=plan.diff, voted={}, checked_only=check)
    refusal: LoadRefused | None = None
    if removed:
        try:
            outcome.voted = await votes_of(removed)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not force:
                refusal = LoadRefused(
                    f"refused: cannot tell whether the {len(removed)} comparisons it removes have votes"
                    f" (Postgres: {exc}); --force removes them anyway",
                    2,
                    503,
                    "votes_unknown",
                    outcome,
                )
    if outcome.voted and not force:
        voted = outcome.voted
        refusal = LoadRefused(
            f"refused: it removes {len(voted)} comparison{'s' if len(voted) != 1 else ''} with votes: {_named(voted)};"
            " --force removes them (their votes stay in the stream and the tallies)",
            2,
            409,
            "comparisons_have_votes",
            outcome,
        )
    if check:
        outcome.refused = None if refusal is None else str(refusal)
        return outcome
    if refusal is not None:
        raise refusal
    try:
        report: LoadReport = await apply_load(js, plan, replicas=replicas, progress=progress)
    except CatalogBusy as exc:
        raise LoadRefused(f"refused: {exc}", 1, 409, "catalogue_busy") from None
    outcome.revision, outcome.written, outcome.seconds = report.revision, report.written, report.seconds
    return outcome


def describe(outcome: LoadOutcome) -> list[str]:
    """The diff for people: a summary line, then the ids of each kind of change."""
    diff = outcome.diff
    lines = [
        f"against revision {outcome.previous}: tools +{len(diff.tools_added)} ~{len(diff.tools_changed)}"
        f" -{len(diff.tools_removed)}, comparisons +{len(diff.comparisons_added)}"
        f" ~{len(diff.comparisons_changed)} -{len(diff.comparisons_removed)}"
    ]
    for label, ids in (
        ("tools added", diff.tools_added),
        ("tools changed", diff.tools_changed),
        ("tools removed", diff.tools_removed),
        ("comparisons added", diff.comparisons_added),
        ("comparisons changed", diff.comparisons_changed),
        ("comparisons removed", diff.comparisons_removed),
    ):
        if ids:
            more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
            lines.append(f"  {label}: {', '.join(ids[:SHOWN])}{more}")
    return lines


class ProgressLine:
    """Entries written, on one line of stderr: redrawn in place at a terminal (at most 5 times a second), else a
    line every 2 s; silent for loads of fewer than ``min_entries``."""

    def __init__(self, min_entries: int = 1000) -> None:
        self._min = min_entries
        self._tty = sys.stderr.isatty()
        self._shown = 0.0
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if total < self._min:
            return
        now = time.monotonic()
        if now - self._shown < (0.2 if self._tty else 2.0) and done < total:
            return
        self._shown = now
        rate = done / max(now - self._started, 1e-6)
        text = f"writing catalogue entries: {done:,}/{total:,} ({rate:,.0f}/s)"
        if self._tty:
            sys.stderr.write("\r" + text + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
