"""Where a service's Python time goes: py-spy samples of a process (and its children), summed per function.

``python -m bench.profile PID SECONDS [OUT_DIR]`` profiles a running process; the harness does the same during
one ingest run with ``BENCH_PROFILE=1``. py-spy is optional (``pip install py-spy``); without it this says so.
"""

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path


def _function(frame: str) -> str:
    """py-spy's "name (path/file.py:LINE)" without the line, so that a function is one entry."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _package(function: str) -> str:
    """The top-level package of a "name (path/file.py)" frame: services, litestar, asyncio, redis, nats..."""
    where = function.rpartition(" (")[2].rstrip(")")
    if "site-packages/" in where:
        where = where.split("site-packages/", 1)[1]
    elif "/lib/python" in where:
        return "stdlib:" + where.rsplit("/", 1)[-1].removesuffix(".py")
    head = where.split("/", 1)[0]
    return head.removesuffix(".py") if head else "native"


def summarise(collapsed: str, top: int = 20) -> list[str]:
    """Lines "inclusive% self%  function (file)" from py-spy's raw (collapsed stack) output.

    Shares are of the samples py-spy took of the thread holding the GIL (``--gil``): where the one core that
    Python code can use goes. The "process ..." frames that
    ``--subprocesses`` puts first are dropped; a sample with no Python frame at all (granian's own Rust threads,
    native code) is counted as such.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = native = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_function(frame) for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            native += count
            continue
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
    if not total:
        return ["profile: no samples"]

    def row(frame: str) -> str:
        return f"  {100 * inclusive[frame] / total:5.1f} {100 * own[frame] / total:5.1f}  {frame}"

    lines = [
        f"profile: {total} thread samples; {100 * native / total:.1f} % with no Python frame (native threads)",
        "profile: the service's own functions, by inclusive share (inclusive% self%)",
    ]
    lines.append("profile: self time by package: " + ", ".join(
        f"{package} {100 * count / total:.1f} %" for package, count in packages.most_common()
    ))  # fmt: skip
    ours = [frame for frame, _ in inclusive.most_common() if "(services/" in frame or "(contracts/" in frame]
    lines += [row(frame) for frame in ours[:top]]
    lines.append("profile: every function, by self share (inclusive% self%)")
    lines += [row(frame) for frame, _ in own.most_common(top)]
    return lines


async def profile_process(pid: int, seconds: float, out_dir: Path, name: str = "votes") -> list[str]:
    """Sample ``pid`` and its children for ``seconds``; write the raw stacks and return the summary lines."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return ["profile: py-spy is not installed (pip install py-spy)"]
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"profile-{name}.txt"
    process = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(pid), "--subprocesses", "--duration", str(max(1, int(seconds))),
        "--rate", "250", "--gil", "--format", "raw", "--output", str(raw), "--nonblocking",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0 or not raw.exists():
        return [f"profile: py-spy failed ({process.returncode}): {out.decode(errors='replace')[-300:]}"]
    lines = summarise(raw.read_text())
    (out_dir / f"profile-{name}-summary.txt").write_text("\n".join(lines) + "\n")
    return [f"profile of the {name} service written to {raw}", *lines]


def main(argv: list[str]) -> int:
    pid, seconds = int(argv[0]), float(argv[1])
    out_dir = Path(argv[2]) if len(argv) > 2 else Path(".")
    for line in asyncio.run(profile_process(pid, seconds, out_dir)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
