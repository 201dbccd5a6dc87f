"""Every operator command, with NATS or Postgres unreachable or the database not migrated: one line on stderr,
exit 2, no traceback. And ``--help`` in plain text.

A server that is down is, to a command that starts after it went, an address where nothing answers: these run
each command against a free port where nothing listens (the servers the rest of the suite uses stay up). The
admin API's answer to a server stopped under it is in tests/faults/test_admin_outage.py.
"""

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from infra.stack.servers import ServerAddresses, free_port
from services.cli import build_parser
from tests.support import empty_database, run_cli, service_env

VOTER = "ab" * 16
COMMANDS: list[tuple[str, ...]] = [
    ("status",),
    ("status", "--json"),
    ("verify",),
    ("verify", "--comparison", "llama-4-scout-vs-windsurf-swe-1"),
    ("rebuild",),
    ("rebuild", "--comparison", "llama-4-scout-vs-windsurf-swe-1"),
    ("dead-letters", "list"),
    ("dead-letters", "list", "--discarded"),
    ("dead-letters", "show", "1"),
    ("dead-letters", "retry"),
    ("dead-letters", "retry", "1", "2"),
    ("dead-letters", "discard", "1", "--reason", "x"),
    ("void-voter", VOTER, "--reason", "x"),
    ("voters", "--comparison", "llama-4-scout-vs-windsurf-swe-1"),
]


def run_all(env: dict[str, str], commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    # Most of each run is waiting (on a connection that fails, or on imports): several at once.
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda args: run_cli(env, *args, timeout=60), commands))


def assert_one_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, (result.args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (result.args, result.stderr)
    assert all(fragment in lines[0] for fragment in fragments), (result.args, lines[0])


@pytest.fixture
def unmigrated(servers: ServerAddresses) -> Iterator[str]:
    """The URL of an empty database on the suite's Postgres: up, but without shipskip's tables."""
    with empty_database(servers, "shipskip_unmigrated") as url:
        yield url


def test_with_nats_down_every_command_says_so_in_one_line(servers: ServerAddresses) -> None:
    env = service_env(servers, SHIPSKIP_NATS_URL=f"nats://127.0.0.1:{free_port()}")
    for result in run_all(env, COMMANDS):
        assert_one_line(result, "cannot reach NATS")


def test_with_postgres_down_every_command_says_so_in_one_line(servers: ServerAddresses) -> None:
    env = service_env(servers, SHIPSKIP_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/shipskip")
    for result in run_all(env, [*COMMANDS, ("migrate",), ("projector",)]):
        assert_one_line(result, "Postgres" if result.args[3] != "projector" else "")


def test_an_unmigrated_database_is_named_with_the_command_to_run(servers: ServerAddresses, unmigrated: str) -> None:
    env = service_env(servers, SHIPSKIP_DATABASE_URL=unmigrated)
    # One per table the commands read first.
    commands = [COMMANDS[i] for i in (0, 4, 6, 9, 12, 13)]
    for result in run_all(env, commands):
        assert_one_line(result, "run `shipskip migrate`")


def test_help_is_plain_text_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    top = subprocess.run([sys.executable, "-m", "services.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    assert "``" not in top.stdout
    assert "voters" in top.stdout
    # The subcommands' help, from the parser the command runs (a process each would only repeat the start-up).
    commands: list[tuple[str, ...]] = [("rebuild",), ("verify",), ("status",), ("void-voter",), ("voters",)]
    commands.append(("dead-letters",))
    commands += [("dead-letters", action) for action in ("list", "show", "retry", "discard")]
    for args in commands:
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*args, "--help"])
        assert exited.value.code == 0
        shown = capsys.readouterr().out
        assert shown.startswith(f"usage: shipskip {' '.join(args)}"), shown
        assert "``" not in shown, shown
        assert len(shown.split("\n\n")) >= 3, f"no description: {shown}"
