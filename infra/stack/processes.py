"""Starting shipskip's own service processes (votes API, read API, projector) and waiting until they serve.

Used by ``shipskip run`` and by the test suite, so both run the services exactly the same way: as real
processes talking HTTP and NATS. Each runs in its own session (a terminal's Ctrl-C reaches only the runner, which
decides the order of the stop) and is tied to the process that started it (``infra/stack/lifeline.py``).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infra.stack.lifeline import child_options
from infra.stack.servers import free_port
from services.serve import ServiceName, service_command
from services.shared.config import Env
from services.shared.ops_port import OPS_PORT_VARIABLES, ops_port_of
from services.shared.telemetry_settings import TelemetrySettings


def launch_command(name: ServiceName, port: int | None = None, workers: int = 1) -> list[str]:
    """How the stack and the tests start a service: ``shipskip serve`` checks the settings, then becomes granian."""
    if name == "projector":
        return service_command(name)
    assert port is not None
    return [sys.executable, "-m", "services.cli", "serve", name, "--port", str(port), "--workers", str(workers)]


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM (finish in-flight work), then SIGKILL after ``timeout``; the exit status.

    The SIGKILL goes to the whole process group when the process leads one (started in its own session): granian's
    workers would otherwise outlive their killed main process, still holding the port.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group_or_process(process)
            process.wait()
    return process.returncode


def describe_exit(status: int) -> str:
    """``exited with status 1`` / ``killed by SIGKILL``, from a Popen return code."""
    if status >= 0:
        return f"exited with status {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def _kill_group_or_process(process: subprocess.Popen[bytes]) -> None:
    try:
        leads_group = os.getpgid(process.pid) == process.pid
    except ProcessLookupError:
        return
    if leads_group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()


@dataclass
class ServiceProcess:
    name: ServiceName
    process: subprocess.Popen[bytes]
    port: int | None
    log_path: Path
    log_start: int = 0
    """Where this run's lines begin in the (appended) log."""
    workers: int = 1
    """granian worker processes behind the port (HTTP services)."""
    label: str | None = None
    """What logs and messages call it, when not its name (``projector-1``: one of several)."""
    started_at: float = field(default_factory=time.monotonic)
    ops_port: int = 0
    """Where it serves /metrics, /healthz and /readyz for operators (services/shared/ops_port.py)."""

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.ops_port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_status(self) -> int | None:
        """None while it runs; once it exited, its status, after ending what is left of its process group.

        A granian main process that dies (SIGKILL) leaves its workers running, holding the port. They are in its
        group; the exited main process is looked at without reaping it, so the group's id cannot have gone to
        another process when it is killed.
        """
        if self.process.returncode is not None:
            return self.process.returncode
        try:
            exited = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # reaped already (by poll())
            return self.process.poll()
        if exited is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()

    def stop(self, timeout: float = 15.0) -> int:
        if self.exit_status() is not None:
            return self.process.returncode
        return stop_process(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL at once: a crash."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines this run wrote."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_start)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_service(
    name: ServiceName,
    env: Mapping[str, str],
    log_dir: Path,
    port: int | None = None,
    *,
    cwd: Path | None = None,
    wait: bool = True,
    own_session: bool = True,
    workers: int = 1,
    label: str | None = None,
) -> ServiceProcess:
    """Start a service; with ``wait``, return once it serves (every one of its ``workers``).

    ``label``: its name in messages and its log's (``<label>.log``) when several of one service run.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    ops_port = ops_port_of(name, TelemetrySettings.from_env(Env({**os.environ, **env})))
    if ops_port == 0:  # any free port: picked here, so that the caller knows it
        ops_port = free_port()
        env = {**env, OPS_PORT_VARIABLES[name]: str(ops_port)}
    log_path = log_dir / f"{label or name}.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            launch_command(name, port, workers),
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=own_session,
            **child_options(),
        )
    service = ServiceProcess(name, process, port, log_path, log_start, workers, label, ops_port=ops_port)
    if wait:
        wait_ready(service)
    return service


class ServiceStartError(RuntimeError):
    """A service exited during its start, or did not become ready in time (the message has its log's end)."""


def wait_ready(service: ServiceProcess, timeout: float = 60.0) -> None:
    """Until the HTTP service answers /healthz from each of its workers, or the projector has logged that it runs.

    A worker answers once its own start-up (connections, the read API's view) is done; each new connection goes to
    whichever worker takes it, so /healthz is asked on new connections until every worker's pid was seen.
    """
    deadline = time.monotonic() + timeout
    answered: set[int] = set()
    while time.monotonic() < deadline:
        status = service.exit_status()
        if status is not None:
            raise ServiceStartError(f"{service.title} {describe_exit(status)} while starting:\n{service.log_tail()}")
        if service.port is None:
            if "projector running" in service.log_tail(200):
                return
        else:
            try:
                response = httpx.get(service.url + "/healthz", timeout=1.0)
                if response.status_code == 200:
                    answered.add(int(response.json()["pid"]))
                    if len(answered) >= service.workers:
                        return
                    time.sleep(0.02)  # the next worker may be up already: ask again soon, on a new connection
                    continue
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    raise ServiceStartError(
        f"{service.title} did not become ready in {timeout}s ({len(answered)} of {service.workers} workers answered):"
        f"\n{service.log_tail()}"
    )
