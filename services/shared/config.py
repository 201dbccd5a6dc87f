"""Reading settings from the environment, once, with one clear line per bad or missing value.

Each service has its own settings object (see ``services/<service>/settings.py``); they all read through
``Env``, which also falls back to the file the local stack writes (``.shipskip/stack.json``), so that
``shipskip`` commands run in a checkout find the servers ``make run`` started.
"""

import math
import os
import ssl
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import msgspec

_S = TypeVar("_S")


class ConfigError(Exception):
    """A setting is wrong or missing; the message names the variable."""


class StackFile(msgspec.Struct, omit_defaults=True):
    """What the local stack runner writes for the other ``shipskip`` commands (readable by anyone: no secrets)."""

    env: dict[str, str]
    """The settings that are not secret: the servers' addresses (without passwords), the APIs' ports."""
    secrets_file: str | None = None
    """The file, readable by its owner only, that holds the rest (signing and hash keys, addresses with passwords)."""
    lock: str | None = None
    """The runner's lock file (infra/stack/stack_lock.py): which stack, and whether it still runs."""
    votes_url: str | None = None
    read_url: str | None = None


_SECRET_SUFFIXES = ("_KEY", "_KEYS", "_TOKEN", "_PASSWORD", "_SECRET")


def is_secret(name: str, value: str) -> bool:
    """A key or token by its name, or an address (or several, comma-separated) that carries a password."""
    if name.endswith(_SECRET_SUFFIXES):
        return True
    for part in value.split(","):
        try:
            if urlsplit(part.strip()).password:
                return True
        except ValueError:
            return True  # not an address we can read: not ours to judge, kept private
    return False


def stack_file_path() -> Path:
    return Path(os.environ.get("SHIPSKIP_STACK_FILE", ".shipskip/stack.json"))


def stack_secrets_path(path: Path) -> Path:
    """Where the secrets of the stack file at ``path`` go: beside it, readable by its owner only."""
    return path.with_name(path.stem + ".secrets.json")


def load_stack_file(path: Path | None = None) -> StackFile | None:
    path = path or stack_file_path()
    try:
        return msgspec.json.decode(path.read_bytes(), type=StackFile)
    except FileNotFoundError:
        return None
    except (msgspec.DecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the local stack file: {exc}") from None


def read_stack_file(path: Path | None = None) -> dict[str, str]:
    """The stack file's settings, with the secrets from its private file when this user may read it."""
    stack = load_stack_file(path)
    if stack is None:
        return {}
    env = dict(stack.env)
    if stack.secrets_file is not None:
        secrets_path = Path(stack.secrets_file)
        try:
            private = msgspec.json.decode(secrets_path.read_bytes(), type=dict[str, str])
        except (FileNotFoundError, PermissionError):
            private = {}  # another user's stack, or stopping: its secrets stay unset here
        except (msgspec.DecodeError, OSError) as exc:
            raise ConfigError(f"{secrets_path}: cannot read the local stack's secrets: {exc}") from None
        env.update({name: value for name, value in private.items() if name not in env})
    return env


def write_private_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, readable and writable by its owner only from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    tmp.replace(path)


def write_stack_file(
    env: Mapping[str, str],
    path: Path | None = None,
    *,
    lock: Path | None = None,
    votes_url: str | None = None,
    read_url: str | None = None,
) -> None:
    """The stack file for ``env``: its secrets (``is_secret``) in a private file beside it, the rest in it."""
    path = path or stack_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    private = {name: value for name, value in env.items() if is_secret(name, value)}
    public = {name: value for name, value in env.items() if name not in private}
    secrets_path = stack_secrets_path(path).absolute()
    write_private_file(secrets_path, msgspec.json.format(msgspec.json.encode(private)))
    stack = StackFile(public, str(secrets_path), str(lock) if lock else None, votes_url, read_url)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(stack)))
    tmp.replace(path)


def remove_stack_file(path: Path | None = None) -> None:
    path = path or stack_file_path()
    path.unlink(missing_ok=True)
    stack_secrets_path(path).unlink(missing_ok=True)


class Env:
    """The process environment, then the local stack file; typed getters that name the variable on error."""

    def __init__(self, environ: Mapping[str, str] | None = None, fallback: Mapping[str, str] | None = None):
        self._environ = os.environ if environ is None else environ
        self._fallback = read_stack_file() if fallback is None else fallback

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value == "":
            value = self._fallback.get(name)
        return value if value not in (None, "") else None

    def text(self, name: str, default: str | None = None) -> str:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{name} is not set (and no local stack file provides it; run `make run`)")
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a whole number") from None
        if not minimum <= number <= maximum:
            raise ConfigError(f"{name}={number} is out of range ({minimum} to {maximum})")
        return number

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name}={value!r} is not a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"{name}={value!r} is not a finite number")
        if number < minimum:
            raise ConfigError(f"{name}={number} is below {minimum}")
        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean (use on/off)")

    def items(self, name: str, default: list[str] | None = None) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default or [])
        return [item.strip() for item in value.split(",") if item.strip()]


class NatsSettings(msgspec.Struct, frozen=True):
    """How every process reaches NATS (services/shared/jetstream.py ``connect``): the servers, and the TLS and login
    a production server asks for. One way to log in at most: a user and password (or token) in the URL, a .creds
    file, or an nkey seed file."""

    url: str
    """One server, or every node of a cluster, comma-separated; ``nats://`` or ``tls://``."""
    creds_file: str | None = None
    """A .creds file (the user's JWT and nkey seed, as ``nsc`` writes it)."""
    nkey_seed_file: str | None = None
    """A file holding a user's nkey seed (``SU...``), for a server that lists the user's public nkey."""
    ca_file: str | None = None
    """The CA that signed the server's certificate (else the system's trusted CAs)."""
    cert_file: str | None = None
    key_file: str | None = None
    """A client certificate and its key, for a server that verifies clients (both or neither)."""

    @classmethod
    def from_env(cls, env: Env) -> "NatsSettings":
        settings = cls(
            url=nats_urls(env, "SHIPSKIP_NATS_URL"),
            creds_file=readable_file(env, "SHIPSKIP_NATS_CREDS"),
            nkey_seed_file=readable_file(env, "SHIPSKIP_NATS_NKEY_SEED"),
            ca_file=readable_file(env, "SHIPSKIP_NATS_CA_FILE"),
            cert_file=readable_file(env, "SHIPSKIP_NATS_CERT_FILE"),
            key_file=readable_file(env, "SHIPSKIP_NATS_KEY_FILE"),
        )
        if settings.creds_file and settings.nkey_seed_file:
            raise ConfigError("SHIPSKIP_NATS_CREDS and SHIPSKIP_NATS_NKEY_SEED are both set: use one way to log in")
        if (settings.creds_file or settings.nkey_seed_file) and any(urlsplit(u).username for u in settings.urls):
            raise ConfigError(
                "SHIPSKIP_NATS_URL carries a user while SHIPSKIP_NATS_CREDS or SHIPSKIP_NATS_NKEY_SEED is set:"
                " use one way to log in"
            )
        if bool(settings.cert_file) != bool(settings.key_file):
            raise ConfigError("SHIPSKIP_NATS_CERT_FILE and SHIPSKIP_NATS_KEY_FILE go together: set both or neither")
        return settings

    @property
    def urls(self) -> list[str]:
        return [part.strip() for part in self.url.split(",") if part.strip()]


class ServerSettings(msgspec.Struct, frozen=True):
    """Where the three servers are, and how many copies a NATS cluster keeps of what shipskip stores in it."""

    nats: NatsSettings
    database_url: str
    redis_url: str
    stream_replicas: int = 1
    """Replicas of the VOTES stream and the catalogue bucket: set when they are created, raised (never lowered)
    when a process finds fewer. 3 on a three-node cluster (infra/deploy/, infra/nats-cluster/)."""
    redis_ca_file: str | None = None
    """PEM certificates of the authorities a ``rediss://`` Redis's certificate must chain to, instead of the
    system's; None: the system's."""

    @classmethod
    def from_env(cls, env: Env) -> "ServerSettings":
        return cls(
            nats=NatsSettings.from_env(env),
            database_url=server_url(env, "SHIPSKIP_DATABASE_URL", ("postgresql", "postgres")),
            redis_url=server_url(env, "SHIPSKIP_REDIS_URL", ("redis", "rediss", "unix")),
            # JetStream keeps at most 5 copies of a stream.
            stream_replicas=env.integer("SHIPSKIP_STREAM_REPLICAS", 1, minimum=1, maximum=5),
            redis_ca_file=ca_file(env, "SHIPSKIP_REDIS_CA_FILE", "SHIPSKIP_REDIS_URL", "rediss"),
        )


def ca_file(env: Env, name: str, url_name: str, tls_scheme: str) -> str | None:
    """A file of PEM CA certificates for a server reached over TLS (``url_name`` must start with ``tls_scheme``).

    Loaded here once, as the TLS handshake would, so that a missing, unreadable or wrong file stops the process at
    start with one line, rather than making the server look unreachable later.
    """
    path = env.raw(name)
    if path is None:
        return None
    url = env.raw(url_name) or ""
    if not url.startswith(f"{tls_scheme}://"):
        raise ConfigError(f"{name} is set but {url_name} does not start with {tls_scheme}:// (no TLS to verify)")
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigError(f"{name}={path!r}: no such file") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"{name}={path!r} holds no PEM CA certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise ConfigError(f"{name}={path!r} cannot be read ({exc.strerror or exc})") from None
    return path


def server_url(env: Env, name: str, schemes: tuple[str, ...]) -> str:
    """A server address with one of ``schemes``; caught here rather than as a connection error later."""
    url = env.text(name)
    _check_url(name, url, schemes)
    return url


def nats_urls(env: Env, name: str) -> str:
    """One NATS server's address, or every node of a cluster, comma-separated."""
    value = env.text(name)
    urls = [part.strip() for part in value.split(",") if part.strip()]
    if not urls:
        raise ConfigError(f"{name}={value!r} names no server (nats://HOST:PORT, comma-separated for a cluster)")
    for url in urls:
        _check_url(name, url, ("nats", "tls"))
    return value


def readable_file(env: Env, name: str) -> str | None:
    """An optional path to a file this process can read (a certificate, a key, credentials)."""
    path = env.raw(name)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"{name}={path!r}: no such file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{name}={path!r}: this process may not read it")
    return path


def _check_url(name: str, url: str, schemes: tuple[str, ...]) -> None:
    example = f"{schemes[0]}://HOST:PORT"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{name}={url!r} is not a valid address (like {example})") from None
    if parts.scheme not in schemes:
        raise ConfigError(f"{name}={url!r} must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname and parts.scheme != "unix" and "host=" not in parts.query:
        raise ConfigError(f"{name}={url!r} names no host (like {example})")


def http_base_url(env: Env, name: str) -> str | None:
    """An optional public base URL (http or https, a host, no query), without a trailing slash."""
    value = env.raw(name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r} is not a base URL like https://read.example.com")
    return value.rstrip("/")


def secret_keys(env: Env, name: str) -> list[bytes]:
    """A comma-separated list of secrets, the first one used to sign; each at least 16 characters."""
    keys = env.items(name)
    if not keys:
        raise ConfigError(f"{name} is not set (a comma-separated list of secrets, the first one signing)")
    for key in keys:
        if len(key) < 16:
            raise ConfigError(f"{name} holds a secret shorter than 16 characters")
    return [key.encode() for key in keys]


def secret_key(env: Env, name: str) -> bytes:
    """One secret of at least 16 characters (a comma would make it look like a list of them: refused)."""
    keys = secret_keys(env, name)
    if len(keys) > 1:
        raise ConfigError(f"{name} holds {len(keys)} comma-separated secrets; it takes one")
    return keys[0]


def settings_or_exit(read: Callable[[], _S], program: str = "shipskip") -> _S:
    """The settings ``read`` builds, or exit with status 2 and one line naming the variable (no traceback).

    For the services' entry points: a process with a wrong setting must stop at start, saying which.
    """
    try:
        return read()
    except ConfigError as exc:
        exit_with(f"{program}: {exc}")


def exit_with(line: str, status: int = 2) -> NoReturn:
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(status)
