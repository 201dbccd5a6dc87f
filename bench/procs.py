"""Resident memory and CPU time of process trees, from /proc (Linux), and a description of the machine."""

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    cpu_s: float
    """User plus system time, its own and that of its children it has waited for (cutime, cstime): so a tree's
    sum does not drop when a short-lived child (a Postgres backend) exits."""


def _stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = text[text.rfind(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(field) for field in rest[11:15])
    return ProcStat(ppid=int(rest[1]), cpu_s=(utime + stime + cutime + cstime) / _TICKS)


def rss_mb(pid: int) -> float:
    """VmRSS of one process in MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0.0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def _all_stats() -> dict[int, ProcStat]:
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    return stats


@dataclass(frozen=True)
class TreeSample:
    rss_mb: float
    """Sum over the tree (shared pages count once per process, as VmRSS does)."""
    largest_rss_mb: float
    """The largest single process of the tree (for granian: the worker that runs the app)."""
    cpu_s: float
    processes: int


def sample_trees(roots: dict[str, int]) -> dict[str, TreeSample]:
    """RSS and CPU time of each root process and all its descendants."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    samples = {}
    for name, root in roots.items():
        if root not in stats:
            continue
        tree, todo = [], [root]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        rss = [rss_mb(pid) for pid in tree]
        samples[name] = TreeSample(
            rss_mb=sum(rss),
            largest_rss_mb=max(rss),
            cpu_s=sum(stats[pid].cpu_s for pid in tree if pid in stats),
            processes=len(tree),
        )
    return samples


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (``/proc/stat``'s first line, Linux)."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    )  # the steal time after them is a virtual machine's host busy elsewhere: not counted as busy here
    return (user + nice + system + irq + softirq) / _TICKS


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def _command_version(command: list[str]) -> str:
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        return "not installed"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "unknown"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    except OSError:
        pass
    memory = "unknown"
    try:
        found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        memory = f"{int(found.group(1)) / 1024 / 1024:.1f} GiB" if found else memory
    except OSError:
        pass
    from infra.stack.servers import nats_server_path

    try:
        nats = _command_version([str(nats_server_path()), "--version"])
    except RuntimeError:
        nats = "not found"
    load = os.getloadavg()
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "load_average_at_start": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "litestar": _version("litestar"),
        "granian": _version("granian"),
        "msgspec": _version("msgspec"),
        "nats-py": _version("nats-py"),
        "asyncpg": _version("asyncpg"),
        "nats-server": nats,
        "wrk": " ".join(_command_version(["wrk", "--version"]).split()[:2]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
