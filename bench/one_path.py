"""What the tools for one path at a time (``votes_cpu``, ``publish_cpu``) share: the process's CPU time, and a run
on fresh embedded servers in a temporary folder with ``[COUNT] [ROUNDS]`` from the command line."""

import resource
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from infra.stack.servers import EmbeddedServers, ServerAddresses

Measure = Callable[[ServerAddresses, int, int], Coroutine[Any, Any, None]]


def cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    """CPU time so far, user and system: of this process, or (``resource.RUSAGE_CHILDREN``) of its ended children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_on_embedded_servers(name: str, measure: Measure, default_count: int, default_rounds: int = 3) -> None:
    """``measure(servers, COUNT, ROUNDS)`` on uvloop (as granian runs the services) against fresh servers."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else default_count
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else default_rounds
    with (
        tempfile.TemporaryDirectory(prefix=f"shipskip-{name}-") as folder,
        EmbeddedServers(Path(folder)) as servers,
    ):
        uvloop.run(measure(servers.addresses, count, rounds))
