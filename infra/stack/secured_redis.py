"""A Redis server that asks for a password, and speaks TLS when given a certificate, on a free 127.0.0.1 port.

For the tests of the votes service's Redis connection as production has it (``rediss://:password@…``), beside the
stack's plain Redis (``servers.py``). The wheel's redis-server (6.2) has no TLS; Debian's ``/usr/bin/redis-server``
(7.0) has: ``tls_redis_server_path`` finds it. The certificate files are the caller's to make.
"""

import contextlib
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from infra.stack.servers import START_TIMEOUT_S, STOP_TIMEOUT_S, ServerStartError, free_port

TLS_REDIS_SERVER = Path("/usr/bin/redis-server")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate and key, and the authority that signed it (which clients trust)."""

    cert: Path
    key: Path
    ca: Path


def tls_redis_server_path() -> Path | None:
    """A redis-server built with TLS (Debian's), or None when there is none."""
    return TLS_REDIS_SERVER if TLS_REDIS_SERVER.is_file() else None


class SecuredRedis:
    """One redis-server process: ``requirepass``, and TLS only (no plain port) when ``tls`` is given.

    ``url`` is what a client needs besides the CA file: ``rediss://:PASSWORD@127.0.0.1:PORT/0`` (``redis://`` without
    TLS). ``users`` adds ACL users, ``{name: password}``, each allowed everything.
    """

    def __init__(
        self,
        binary: Path,
        data_dir: Path,
        password: str,
        tls: TlsFiles | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.password = password
        self.tls = tls
        self.users = users or {}
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for("", self.password)

    def url_for(self, username: str, password: str) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{username}:{password}@127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def client(self) -> "redis.Redis":
        """A synchronous client with the password (and the CA): for set-up and checks."""
        tls = {"ssl_ca_certs": str(self.tls.ca)} if self.tls else {}
        return redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0, **tls)

    def start(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",  # stdout, which goes to the log file
            "--requirepass", self.password,
        ]  # fmt: skip
        for name, password in self.users.items():
            command += ["--user", name, "on", f">{password}", "~*", "&*", "+@all"]
        if self.tls is None:
            command += ["--port", str(self.port)]
        else:
            command += [
                "--port", "0",  # TLS only: nothing in clear
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert),
                "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca),
                "--tls-auth-clients", "no",  # clients prove themselves by password, not certificate
            ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with self.client() as client:
            while True:
                if self._process.poll() is not None:
                    log = self.log_path.read_text(errors="replace")[-2000:]
                    raise ServerStartError(f"{self.binary} exited with {self._process.returncode}:\n{log}")
                with contextlib.suppress(ConnectionError, TimeoutError, ResponseError, AuthenticationError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise ServerStartError(f"{self.binary} did not answer in {START_TIMEOUT_S:.0f}s: {self.log_path}")
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
