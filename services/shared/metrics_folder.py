"""The folder of one run of an HTTP service, where its granian workers keep their metric files.

prometheus-client chooses how it stores values once, when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``
(there is no public way to choose again). So the folder is made and put in the environment before the service's
processes exist: ``shipskip serve`` does it, then becomes granian (services/serve.py), whose workers inherit the
variable. The folder is ``<SHIPSKIP_METRICS_DIR>/<service>-<pid>-<its start>``, the pid being granian's main
process (the one ``shipskip serve`` becomes): shared by the workers of that run, new for the next run, so counters
start from zero with the service. Folders of runs whose main process is gone are removed when a run starts.

No prometheus-client here: this runs before it may be imported.
"""

import os
import re
import shutil
from pathlib import Path

from services.shared.config import ConfigError

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's variable: the folder of the multiprocess mode's files."""

_RUN_DIR = re.compile(r"[a-z]+-(\d+)-(\d+)")


def process_start(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot, from /proc), so a reused pid is not taken for the old process;
    0 where /proc is missing or the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: count fields after its closing parenthesis.
    return int(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove_finished_runs(base: Path) -> None:
    for folder in base.iterdir():
        match = _RUN_DIR.fullmatch(folder.name)
        if match is None:
            continue
        pid, started = int(match.group(1)), int(match.group(2))
        if not alive(pid) or process_start(pid) != started:
            shutil.rmtree(folder, ignore_errors=True)


def new_run_folder(service: str, base: Path, pid: int) -> Path:
    """The (new, empty) folder of the run whose main process is ``pid``, inside ``base``; finished runs' removed."""
    base.mkdir(parents=True, exist_ok=True)
    _remove_finished_runs(base)
    folder = base / f"{service}-{pid}-{process_start(pid)}"
    folder.mkdir(exist_ok=True)
    return folder


def run_folder_of_worker() -> Path:
    """The folder this worker's run was given (``MULTIPROCESS_VARIABLE``), checked to exist.

    A ``ConfigError`` naming the variable when the process was not started by ``shipskip serve`` (or with the
    variable set, as the tests and benchmarks that start granian themselves do).
    """
    value = os.environ.get(MULTIPROCESS_VARIABLE)
    if not value:
        raise ConfigError(f"{MULTIPROCESS_VARIABLE} is not set: start the HTTP services with `shipskip serve`")
    folder = Path(value)
    if not folder.is_dir():
        raise ConfigError(f"{MULTIPROCESS_VARIABLE}={value} is not a folder")
    return folder
