"""The operator commands of ``shipskip``: rebuild, verify, status, dead-letters, void-voter, voters.

Every command ends in one of three ways: done (exit 0; ``verify`` exits 1 when it found differences), refused
or unable to run (one line on stderr, exit 2: an unknown id, bad input, a server that is down), or interrupted
(exit 130). No traceback reaches the operator for a server that is down or an id that names nothing.
"""

import argparse
import asyncio
import logging
import sys
import time

import asyncpg
import msgspec
from nats.aio.client import Client as NATS

from services.operators import reports
from services.operators.dead_letters import (
    InvalidDiscard,
    NoSuchDeadLetter,
    discard_dead_letter,
    list_dead_letters,
    list_discarded,
    retry_dead_letters,
    show_dead_letter,
)
from services.operators.failures import OUTAGES, describe_outage
from services.operators.known import InvalidId, UnknownId, require_comparison
from services.operators.moderation import InvalidVoid, UnknownVoter, void_voter
from services.operators.plurals import plural
from services.operators.status import format_status, read_status
from services.operators.voters import InvalidQuery, check_limit, find_voters, parse_since
from services.shared.jetstream import connect
from services.tally.pools import folding_pool
from services.tally.rebuild.rebuild import Progress, RebuildRunning, rebuild, verify
from services.tally.settings import TallySettings
from services.tally.store import Projection

_json = msgspec.json.Encoder()


class Refused(Exception):
    """The command cannot do what was asked: one line on stderr, exit 2."""


class ProgressBar:
    """One line on stderr, redrawn at most five times a second: events done, events per second, time left."""

    def __init__(self) -> None:
        self._drawn = 0.0

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self._drawn < 0.2 and progress.done < progress.total:
            return
        self._drawn = now
        total = max(progress.total, progress.done, 1)
        filled = int(30 * progress.done / total)
        left = progress.seconds_left
        eta = f"{left:5.0f} s left" if left is not None else "      "
        sys.stderr.write(
            f"\r{progress.kind} [{'#' * filled}{'.' * (30 - filled)}] {progress.done}/{total} events"
            f"  {progress.rate:8.0f} ev/s  {eta}  {progress.phase}   "
        )
        sys.stderr.flush()


def operator_main(args: argparse.Namespace) -> int:
    """Run one operator command to its exit code (see the module's docstring)."""
    # A service logs each failed try to reach NATS; a command says once, at the end, that it could not.
    logging.getLogger("services.shared.jetstream").setLevel(logging.ERROR)
    try:
        return asyncio.run(run_operator_command(args))
    except KeyboardInterrupt:
        print(f"\nshipskip {args.command}: interrupted", file=sys.stderr)
        return 130


REFUSALS = (Refused, UnknownId, InvalidId, InvalidQuery, InvalidVoid, NoSuchDeadLetter, InvalidDiscard)


async def run_operator_command(args: argparse.Namespace) -> int:
    name = f"shipskip {args.command}" + (f" {args.dead_command}" if args.command == "dead-letters" else "")
    try:
        return await _connected(args)
    except UnknownVoter as exc:
        print(f"{name}: {exc}; to void them before they vote, pass --force", file=sys.stderr)
        return 2
    except REFUSALS as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except RebuildRunning as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # stdout closed by the reader (`| head`): not a server's failure; services/cli.py handles it
    except OUTAGES as exc:
        print(f"{name}: {describe_outage(exc)}", file=sys.stderr)
        return 2


async def _connected(args: argparse.Namespace) -> int:
    settings = TallySettings.from_env()
    _check_arguments(args)
    try:
        nc = await connect(settings.servers.nats, "shipskip-operator", timeout_s=5)
    except ConnectionError as exc:  # it names the server and the address
        raise Refused(str(exc)) from None
    try:
        try:
            # Rebuilds hold one connection for the swap while folding on another, and record progress on a third.
            pool = await asyncio.wait_for(folding_pool(settings.servers.database_url, max_size=4), 10)
        except OUTAGES as exc:
            raise Refused(describe_outage(exc, "Postgres")) from None
        try:
            return await _dispatch(args, settings, nc, pool)
        finally:
            await pool.close()
    finally:
        await nc.close()


def _check_arguments(args: argparse.Namespace) -> None:
    """What can be refused before any server is asked."""
    if args.command == "rebuild" and args.partitions is not None and args.comparison is not None:
        raise Refused("--partitions re-partitions every comparison; leave out --comparison")
    if args.command == "voters":
        args.since_window = parse_since(args.since)
        check_limit(args.limit)


async def _dispatch(args: argparse.Namespace, settings: TallySettings, nc: NATS, pool: asyncpg.Pool) -> int:
    js = nc.jetstream()
    limit = settings.ballots_per_client_day
    if args.command in ("rebuild", "verify") and args.comparison is not None:
        await require_comparison(js, pool, args.comparison)
    if args.command == "rebuild":
        report = await rebuild(
            nc,
            pool,
            settings.servers.database_url,
            nats=settings.servers.nats,
            ballots_per_client_day=limit,
            comparison_id=args.comparison,
            on_progress=ProgressBar(),
            partitions=args.partitions,
            memory_ballots=settings.rebuild_memory_ballots,
        )
        rate = report.events / report.seconds if report.seconds else 0.0
        print(
            f"\nrebuilt {plural(report.events, 'event')} in {report.seconds:.1f} s ({rate:.0f}/s);"
            f" position {report.position}"
        )
        if args.partitions is not None:
            print(
                f"the projection is now in {plural(args.partitions, 'partition')}; the projectors of another"
                f" number stop at their next batch. `make run` starts the new ones itself; elsewhere run them with"
                f" SHIPSKIP_PARTITIONS={args.partitions}"
            )
        return 0
    if args.command == "verify":
        position, differences = await verify(
            nc,
            pool,
            ballots_per_client_day=limit,
            comparison_id=args.comparison,
            on_progress=ProgressBar(),
        )
        print(f"\nverified up to stream position {position}: {plural(len(differences), 'difference')}")
        for d in differences:
            if d.minute is not None:
                print(
                    f"  history {d.comparison_id} / {d.tool_id} minute {d.minute}: live change ship={d.live.ship}"
                    f" skip={d.live.skip}; from the stream ship={d.expected.ship} skip={d.expected.skip}"
                )
                continue
            print(
                f"  {d.comparison_id} / {d.tool_id}: live ship={d.live.ship} skip={d.live.skip}"
                f" uncounted={d.live.uncounted_ship}+{d.live.uncounted_skip};"
                f" from the stream ship={d.expected.ship} skip={d.expected.skip}"
                f" uncounted={d.expected.uncounted_ship}+{d.expected.uncounted_skip}"
            )
        return 0 if not differences else 1
    if args.command == "status":
        status = await read_status(nc, pool)
        print(_json.encode(status).decode() if args.json else format_status(status))
        return 0
    if args.command == "dead-letters":
        return await _dead_letters(args, settings, nc, pool)
    if args.command == "void-voter":
        outcome = await void_voter(js, pool, args.voter_id, args.reason, force=args.force)
        print(reports.void_summary(outcome))
        return 0
    if args.command == "voters":
        found = await find_voters(
            js, pool, args.comparison, tool_id=args.tool, since=args.since_window, limit=args.limit
        )
        print(_json.encode(found).decode() if args.json else reports.voters_table(found, args.since))
        return 0
    raise AssertionError(args.command)


async def _dead_letters(args: argparse.Namespace, settings: TallySettings, nc: NATS, pool: asyncpg.Pool) -> int:
    command = args.dead_command
    if command == "list":
        if args.discarded:
            discarded, total = await list_discarded(pool, args.limit)
            print(reports.discarded_list(discarded, total))
        else:
            letters, total = await list_dead_letters(pool, args.limit)
            print(reports.dead_letter_list(letters, total))
        return 0
    if command == "show":
        letter = await show_dead_letter(pool, nc, args.seq)
        print(_json.encode(letter).decode() if args.json else reports.dead_letter_detail(letter))
        return 0
    if command == "retry":
        retried = await retry_dead_letters(
            pool, Projection(settings.ballots_per_client_day), nc, args.seqs if args.seqs else None
        )
        print(reports.retry_summary(retried))
        return 0
    if command == "discard":
        gone = await discard_dead_letter(pool, args.seq, args.reason)
        left = int(await pool.fetchval("select count(*) from dead_letters"))
        print(reports.discard_summary(gone, left))
        return 0
    raise AssertionError(command)
