"""The operator commands of ``shipskip``: rebuild, verify, status, dead-letters, void-voter."""

import argparse
import sys
import time

import asyncpg
import msgspec

from services.operators.dead_letters import list_dead_letters, retry_dead_letters
from services.operators.moderation import InvalidVoid, void_voter
from services.operators.status import format_status, read_status
from services.shared.jetstream import connect
from services.tally.pools import folding_pool
from services.tally.rebuild.rebuild import Progress, RebuildRunning, rebuild, verify
from services.tally.settings import TallySettings
from services.tally.store import Projection


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


async def run_operator_command(args: argparse.Namespace) -> int:
    settings = TallySettings.from_env()
    nc = await connect(settings.servers.nats, "shipskip-operator", timeout_s=5)
    # Rebuilds hold one connection for the swap while folding on another, and record progress on a third.
    pool = await folding_pool(settings.servers.database_url, max_size=4)
    try:
        return await _dispatch(args, settings, nc, pool)
    finally:
        await pool.close()
        await nc.close()


async def _dispatch(args: argparse.Namespace, settings: TallySettings, nc: object, pool: asyncpg.Pool) -> int:
    from nats.aio.client import Client as NATS

    assert isinstance(nc, NATS)
    limit = settings.ballots_per_client_day
    if args.command == "rebuild":
        if args.partitions is not None and args.comparison is not None:
            print(
                "shipskip rebuild: --partitions re-partitions every comparison; leave out --comparison", file=sys.stderr
            )
            return 2
        try:
            report = await rebuild(
                nc,
                pool,
                settings.servers.database_url,
                ballots_per_client_day=limit,
                comparison_id=args.comparison,
                on_progress=ProgressBar(),
                partitions=args.partitions,
                memory_ballots=settings.rebuild_memory_ballots,
            )
        except RebuildRunning as exc:
            print(f"shipskip rebuild: {exc}", file=sys.stderr)
            return 1
        rate = report.events / report.seconds if report.seconds else 0.0
        print(f"\nrebuilt {report.events} events in {report.seconds:.1f} s ({rate:.0f}/s); position {report.position}")
        if args.partitions is not None:
            print(
                f"the projection is now in {args.partitions} partition(s): run its projectors with"
                f" SHIPSKIP_PARTITIONS={args.partitions} (those of another number stop at their next batch)"
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
        print(f"\nverified up to stream position {position}: {len(differences)} differences")
        for d in differences:
            print(
                f"  {d.comparison_id} / {d.tool_id}: live ship={d.live.ship} skip={d.live.skip}"
                f" uncounted={d.live.uncounted_ship}+{d.live.uncounted_skip};"
                f" from the stream ship={d.expected.ship} skip={d.expected.skip}"
                f" uncounted={d.expected.uncounted_ship}+{d.expected.uncounted_skip}"
            )
        return 0 if not differences else 1
    if args.command == "status":
        status = await read_status(nc, pool)
        if args.json:
            sys.stdout.write(msgspec.json.encode(status).decode() + "\n")
        else:
            print(format_status(status))
        return 0
    if args.command == "dead-letters":
        if args.dead_command == "list":
            letters = await list_dead_letters(pool)
            for letter in letters:
                print(f"#{letter.seq} {letter.subject} ({letter.recorded_at:%Y-%m-%d %H:%M:%S}): {letter.reason}")
                print(f"    {letter.data}")
            print(f"{len(letters)} dead letters")
            return 0
        retried = await retry_dead_letters(pool, Projection(limit), nc)
        print(f"applied {len(retried.applied)}, still dead {len(retried.still_dead)}")
        return 0 if not retried.still_dead else 1
    if args.command == "void-voter":
        try:
            event = await void_voter(nc.jetstream(), args.voter_id, args.reason)
        except InvalidVoid as exc:
            print(f"shipskip void-voter: {exc}", file=sys.stderr)
            return 2
        print(f"voided {event.voter_id} (event {event.event_id}); the projector removes their ballots")
        return 0
    raise AssertionError(args.command)
