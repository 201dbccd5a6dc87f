"""Everything the benchmarks run against: the servers, shipskip's three services and the two baseline apps.

The shipskip services are started by ``infra.stack.processes.start_service`` (exactly as ``shipskip run`` and the
tests start them); the baseline apps with the same granian command and flags (``service_command``), only the
factory differs. Rate limits are off (``SHIPSKIP_RATE_LIMITS=off``) and the per-client counting policy is set
beyond reach, since every benchmark vote comes from 127.0.0.1.
"""

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from nats.js.errors import NotFoundError

from contracts.catalog import Catalog, decode_catalog
from contracts.subjects import CATALOG_BUCKET, VOTES_STREAM
from infra.stack.bootstrap import DEMO_CATALOG, bootstrap
from infra.stack.processes import ServiceProcess, start_service, stop_process, wait_ready
from infra.stack.servers import EmbeddedServers, ServerAddresses, ServerName, free_port
from services.serve import ServiceName, service_command
from services.shared.jetstream import connect
from services.votes.identity import VoterTokens

TOKEN_KEY = "bench-signing-key-" + "a" * 16
HASH_KEY = "bench-hash-key-" + "b" * 16
TOKEN_TTL_S = 365 * 86400

BASELINE_FACTORIES = {"bare": "bench.apps.bare:create_app", "plain": "bench.apps.plain:create_app"}
NATS_SYNC = re.compile(r"always|[0-9]+(ms|s|m|h)")
"""What ``BENCH_NATS_SYNC`` may be: nats-server's ``sync_interval`` values."""


def service_env(servers: ServerAddresses) -> dict[str, str]:
    return {
        "SHIPSKIP_NATS_URL": servers.nats_url,
        "SHIPSKIP_DATABASE_URL": servers.database_url,
        "SHIPSKIP_REDIS_URL": servers.redis_url,
        "SHIPSKIP_TOKEN_KEYS": TOKEN_KEY,
        "SHIPSKIP_HASH_KEY": HASH_KEY,
        "SHIPSKIP_COOKIE_SECURE": "off",
        "SHIPSKIP_STACK_FILE": "/nonexistent/shipskip-stack.json",
        "SHIPSKIP_RATE_LIMITS": "off",
        # All benchmark votes come from one address; the counting policy would leave all but 100 uncounted.
        "SHIPSKIP_BALLOTS_PER_CLIENT_DAY": "2000000000",
        # ... and every benchmark stream too (the soak holds hundreds): no per-address stream limit.
        "SHIPSKIP_SSE_MAX_STREAMS_PER_ADDRESS": "1000000",
        # Any free port for each process's /metrics: `make run` (or another stack) may hold 8082, 9080, 9081.
        "SHIPSKIP_PROJECTOR_PORT": "0",
        "SHIPSKIP_VOTES_METRICS_PORT": "0",
        "SHIPSKIP_TALLY_METRICS_PORT": "0",
    }


@dataclass
class AppProcess:
    """A baseline app under granian."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout)


def app_command(factory: str, port: int) -> list[str]:
    """``service_command``'s granian command line, with another factory."""
    command = service_command("votes", port)
    at = command.index("--factory")
    command[at + 1] = factory
    return command


def start_app(name: str, env: dict[str, str], log_dir: Path, timeout: float = 60.0) -> AppProcess:
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            app_command(BASELINE_FACTORIES[name], port),
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = AppProcess(name, process, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(app.url + "/healthz", timeout=1.0).status_code == 200:
                return app
        time.sleep(0.1)
    app.stop()
    raise TimeoutError(f"{name} did not answer /healthz in {timeout}s")


async def reset_servers(servers: ServerAddresses) -> None:
    """Empty the stream, the catalogue and the database, then bootstrap as a first start would."""
    nc = await connect(servers.nats, "shipskip-bench")
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(VOTES_STREAM)
        with contextlib.suppress(NotFoundError):
            await js.delete_stream("KV_" + CATALOG_BUCKET)
    finally:
        await nc.close()
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute(
            "drop schema public cascade; create schema public; drop schema if exists bench_plain cascade"
        )
    finally:
        await conn.close()
    await bootstrap(servers.nats, servers.database_url)


@dataclass
class BenchStack:
    """Servers (embedded unless given) and the processes under test; ``stop()`` ends all it started."""

    work_dir: Path
    servers: ServerAddresses | None = None
    embedded: EmbeddedServers | None = None
    services: dict[ServiceName, ServiceProcess] = field(default_factory=dict)
    apps: dict[str, AppProcess] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=lambda: decode_catalog(DEMO_CATALOG.read_bytes()))
    nats_sync: str = ""
    """``BENCH_NATS_SYNC``: JetStream's sync_interval for the embedded nats-server; empty: its default."""
    _own_work_dir: bool = False

    @classmethod
    def create(
        cls, servers: ServerAddresses | None = None, work_dir: Path | None = None, nats_sync: str = ""
    ) -> "BenchStack":
        if nats_sync and not NATS_SYNC.fullmatch(nats_sync):
            raise ValueError(f"BENCH_NATS_SYNC={nats_sync!r}: give always or a duration (500ms, 10s, 2m)")
        own = work_dir is None
        directory = Path(tempfile.mkdtemp(prefix="shipskip-bench-")) if work_dir is None else work_dir
        # The servers live below it, and PostgreSQL runs as an unprivileged account under root: let it pass.
        directory.chmod(directory.stat().st_mode | 0o011)
        return cls(work_dir=directory, servers=servers, nats_sync=nats_sync, _own_work_dir=own)

    @property
    def addresses(self) -> ServerAddresses:
        assert self.servers is not None, "start() first"
        return self.servers

    @property
    def log_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def env(self) -> dict[str, str]:
        return service_env(self.addresses)

    def start_servers(self) -> None:
        if self.servers is None:
            self.embedded = EmbeddedServers(self.work_dir / "servers", nats_config=self.nats_config_file())
            self.servers = self.embedded.start()
        asyncio.run(reset_servers(self.addresses))

    def nats_config_file(self) -> Path | None:
        """The nats-server configuration file of ``nats_sync``, written into the work folder; None without it."""
        if not self.nats_sync:
            return None
        path = self.work_dir / "nats-sync.conf"
        path.write_text(f'jetstream {{\n  sync_interval: "{self.nats_sync}"\n}}\n')
        return path

    def start_processes(self) -> None:
        """The three shipskip services and both baseline apps, started side by side."""
        pending: list[ServiceProcess] = []
        names: tuple[ServiceName, ...] = ("projector", "read", "votes")
        for name in names:
            port = None if name == "projector" else free_port()
            service = start_service(name, self.env, self.log_dir, port, wait=False)
            self.services[service.name] = service
            pending.append(service)
        for app in BASELINE_FACTORIES:
            self.apps[app] = start_app(app, self.env, self.log_dir)
        for service in pending:
            wait_ready(service)

    def start(self) -> None:
        self.start_servers()
        self.start_processes()

    def service(self, name: ServiceName) -> ServiceProcess:
        return self.services[name]

    def restart_projector(self, wait: bool = True) -> ServiceProcess:
        old = self.services.pop("projector", None)
        if old is not None:
            old.stop()
        service = start_service("projector", self.env, self.log_dir, wait=wait)
        self.services["projector"] = service
        return service

    def stop_projector(self) -> None:
        old = self.services.pop("projector", None)
        if old is not None:
            old.stop()

    def server_pids(self) -> dict[str, int]:
        if self.embedded is None:
            return {}
        pids: dict[str, int] = {}
        names: tuple[ServerName, ...] = ("nats", "postgres", "redis")
        for name in names:
            pid = self.embedded.pid(name)
            if pid is not None:
                pids[name] = pid
        return pids

    def process_roots(self) -> dict[str, int]:
        """Every process whose memory and CPU the benchmarks watch, by name."""
        roots: dict[str, int] = {name: s.process.pid for name, s in self.services.items() if s.alive()}
        roots.update(self.server_pids())
        return roots

    def write_tokens(self, count: int) -> Path:
        """``count`` voter tokens, one a line, as POST /v1/voters would issue them (same keys, same code)."""
        tokens = VoterTokens([TOKEN_KEY.encode()], TOKEN_TTL_S)
        path = self.work_dir / f"tokens-{count}.txt"
        if not path.exists():
            path.write_text("\n".join(tokens.issue() for _ in range(count)) + "\n")
        return path

    def log_tails(self, lines: int = 20) -> str:
        parts = [f"--- {name}:\n{s.log_tail(lines)}" for name, s in self.services.items()]
        for name, app in self.apps.items():
            with contextlib.suppress(OSError):
                parts.append(f"--- {name}:\n" + "\n".join(app.log_path.read_text().splitlines()[-lines:]))
        return "\n".join(parts)

    def stop(self, keep_logs_in: Path | None = None) -> None:
        for service in self.services.values():
            service.stop()
        self.services.clear()
        for app in self.apps.values():
            app.stop()
        self.apps.clear()
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        if keep_logs_in is not None and self.log_dir.exists():
            shutil.rmtree(keep_logs_in, ignore_errors=True)
            shutil.copytree(self.log_dir, keep_logs_in)
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
