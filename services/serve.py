"""``shipskip serve votes|read``: check the service's settings, then become granian serving it.

granian loads the application in each worker process, so a wrong setting found there would surface once per worker,
as a traceback, between granian's own lines. Reading the settings here first stops the process with one line naming
the variable (``services/cli.py`` prints it, exit status 2); only settings that pass reach granian, which replaces
this process (same pid, so signals and exit statuses are granian's own).
"""

import os
import sys
from typing import Literal, NoReturn

from services.shared.config import Env
from services.shared.http_server_settings import HttpServerSettings, raise_open_files_limit
from services.shared.metrics_folder import MULTIPROCESS_VARIABLE, new_run_folder
from services.shared.telemetry_settings import TelemetrySettings

ServiceName = Literal["votes", "read", "projector"]

FACTORIES: dict[ServiceName, str] = {
    "votes": "services.votes.app:create_app",
    "read": "services.tally.read.app:create_app",
}
"""The granian application factory of each HTTP service."""


def service_command(
    name: ServiceName,
    port: int | None = None,
    workers: int = 1,
    host: str = "127.0.0.1",
    server: HttpServerSettings | None = None,
) -> list[str]:
    """The process a service runs as: granian for the HTTP services (what ``shipskip serve`` executes); ``server``
    from this process's environment unless given."""
    if name == "projector":
        return [sys.executable, "-m", "services.cli", "projector"]
    assert port is not None
    server = server or HttpServerSettings.from_env(Env(os.environ, fallback={}))
    return [
        sys.executable, "-m", "granian",
        "--interface", "asgi",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--no-ws",
        *server.granian_options(),
        "--log-level", "warning",
        "--factory", FACTORIES[name],
    ]  # fmt: skip


def check_settings(name: ServiceName, environ: dict[str, str], port_given: int | None = None) -> int:
    """Every setting the service reads, validated as its workers will read them; the port it listens on (the
    settings', unless ``port_given`` by ``--port``)."""
    env = Env(environ)
    HttpServerSettings.from_env(env).check_open_files()
    if name == "votes":
        from services.votes.settings import VotesSettings

        port = VotesSettings.from_env(env).port
    else:
        from services.tally.read.settings import LiveSettings
        from services.tally.settings import TallySettings

        LiveSettings.from_env(env)
        port = TallySettings.from_env(env).port
    _check_ops_port(name, env, port_given or port)
    return port


def _check_ops_port(name: ServiceName, env: Env, port: int) -> None:
    """The ops port (/metrics) is not the public one, nor 0 with several workers (services/shared/ops_port.py)."""
    from services.shared.ops_port import check_ops_port

    assert name != "projector"
    check_ops_port(name, TelemetrySettings.from_env(env), port, env.integer("GRANIAN_WORKERS", 1, minimum=1))


def serve(name: ServiceName, *, host: str, port: int | None, workers: int) -> NoReturn:
    # Each connection is an open file: granian's workers inherit this limit, and the default connections per worker
    # are sized by it (services/shared/http_server_settings.py).
    raise_open_files_limit()
    environ = {**os.environ, "GRANIAN_WORKERS": str(workers)}
    settings_port = check_settings(name, environ, port)
    server = HttpServerSettings.from_env(Env(environ))
    # The workers read the same connection count (LiveSettings checks its stream limit against it).
    environ["GRANIAN_BACKPRESSURE"] = str(server.connections)
    command = service_command(name, port or settings_port, workers, host, server)
    # prometheus-client reads its multiprocess folder from the environment when first imported: the workers inherit
    # it. One folder per run, named after the pid granian keeps (services/shared/metrics_folder.py).
    metrics_dir = TelemetrySettings.from_env(Env(environ)).metrics_dir
    environ[MULTIPROCESS_VARIABLE] = str(new_run_folder(name, metrics_dir, os.getpid()))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environ)  # noqa: S606 - our own granian command, no shell
