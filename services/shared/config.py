"""Reading settings from the environment, once, with one clear line per bad or missing value.

Each service has its own settings object (see ``services/<service>/settings.py``); they all read through
``Env``, which also falls back to the file the local stack writes (``.shipskip/stack.json``), so that
``shipskip`` commands run in a checkout find the servers ``make run`` started.
"""

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec


class ConfigError(Exception):
    """A setting is wrong or missing; the message names the variable."""


class StackFile(msgspec.Struct):
    """What the local stack runner writes: the servers' addresses and the secrets it generated."""

    env: dict[str, str]


def stack_file_path() -> Path:
    return Path(os.environ.get("SHIPSKIP_STACK_FILE", ".shipskip/stack.json"))


def read_stack_file(path: Path | None = None) -> dict[str, str]:
    path = path or stack_file_path()
    try:
        return msgspec.json.decode(path.read_bytes(), type=StackFile).env
    except FileNotFoundError:
        return {}
    except (msgspec.DecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the local stack file: {exc}") from None


def write_stack_file(env: Mapping[str, str], path: Path | None = None) -> None:
    path = path or stack_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(StackFile(env=dict(env)))))
    tmp.replace(path)


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


class ServerSettings(msgspec.Struct, frozen=True):
    """Where the three servers are."""

    nats_url: str
    database_url: str
    redis_url: str

    @classmethod
    def from_env(cls, env: Env) -> "ServerSettings":
        return cls(
            nats_url=env.text("SHIPSKIP_NATS_URL"),
            database_url=env.text("SHIPSKIP_DATABASE_URL"),
            redis_url=env.text("SHIPSKIP_REDIS_URL"),
        )


def secret_keys(env: Env, name: str) -> list[bytes]:
    """A comma-separated list of secrets, the first one used to sign; each at least 16 characters."""
    keys = env.items(name)
    if not keys:
        raise ConfigError(f"{name} is not set (a comma-separated list of secrets, the first one signing)")
    for key in keys:
        if len(key) < 16:
            raise ConfigError(f"{name} holds a secret shorter than 16 characters")
    return [key.encode() for key in keys]
