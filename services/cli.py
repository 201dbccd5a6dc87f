"""``shipskip``: run the local stack, run one service, manage the catalogue.

Server addresses come from the environment or from the file ``shipskip run`` writes (.shipskip/stack.json).
"""

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from contracts.catalog import CatalogError, decode_catalog, encode_catalog
from services.shared.config import ConfigError, Env, ServerSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shipskip", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the whole local stack in the foreground until Ctrl-C")
    run.add_argument("--data", type=Path, default=Path(".shipskip"), help="data folder (default .shipskip)")

    commands.add_parser("projector", help="run the tally projector (fold VOTES into Postgres)")
    commands.add_parser("migrate", help="apply the database migrations")

    catalog = commands.add_parser("catalog", help="show or load the catalogue").add_subparsers(
        dest="catalog_command", required=True
    )
    load = catalog.add_parser("load", help="validate a catalogue file and make it the current one")
    load.add_argument("file", type=Path)
    catalog.add_parser("show", help="print the current catalogue as JSON")

    rebuild = commands.add_parser(
        "rebuild", help="replay the stream into fresh tables, catch up, and swap them in atomically"
    )
    rebuild.add_argument("--comparison", metavar="ID", help="rebuild only this comparison's rows")
    verify = commands.add_parser("verify", help="recompute the tallies from the stream and list differences")
    verify.add_argument("--comparison", metavar="ID", help="verify only this comparison")
    status = commands.add_parser("status", help="stream head, projector lag, dead letters, counts, rebuilds")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    dead = commands.add_parser("dead-letters", help="messages the projector could not fold").add_subparsers(
        dest="dead_command", required=True
    )
    dead.add_parser("list", help="show them with their reasons")
    dead.add_parser("retry", help="fold the ones today's reader can decode, keep the rest")
    void = commands.add_parser("void-voter", help="remove a voter's ballots from every tally (moderation)")
    void.add_argument("voter_id", help="the voter id as events and reports show it (32 hex characters)")
    void.add_argument("--reason", required=True, help="why, kept in the event")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except (ConfigError, ConnectionError) as exc:
        print(f"shipskip: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from infra.stack.local import run_local_stack

        return run_local_stack(args.data)
    if args.command == "projector":
        from services.tally.projector import run_projector

        asyncio.run(run_projector())
        return 0
    if args.command == "migrate":
        from infra.migrate import migrate

        applied = asyncio.run(migrate(ServerSettings.from_env(Env()).database_url))
        print("applied: " + (", ".join(applied) or "nothing (up to date)"))
        return 0
    if args.command == "catalog":
        return asyncio.run(_catalog(args))
    from services.operators.commands import run_operator_command

    return asyncio.run(run_operator_command(args))


async def _catalog(args: argparse.Namespace) -> int:
    from services.shared.jetstream import connect, read_catalog, write_catalog

    servers = ServerSettings.from_env(Env())
    if args.catalog_command == "load":
        try:
            catalog = decode_catalog(args.file.read_bytes())
        except (CatalogError, OSError) as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 1
    nc = await connect(servers.nats_url, "shipskip-cli", timeout_s=5)
    try:
        js = nc.jetstream()
        if args.catalog_command == "load":
            revision = await write_catalog(js, catalog)
            print(f"catalogue revision {revision}: {len(catalog.comparisons)} comparisons, {len(catalog.tools)} tools")
            return 0
        current, revision = await read_catalog(js)
        if current is None:
            print("no catalogue loaded", file=sys.stderr)
            return 1
        sys.stdout.write(encode_catalog(current).decode() + "\n")
        return 0
    finally:
        await nc.close()


if __name__ == "__main__":
    sys.exit(main())
