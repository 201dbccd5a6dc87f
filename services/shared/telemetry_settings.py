"""How a shipskip process logs and where it keeps its metrics: read once from the environment at start.

Shared by the votes API, the read API, the projector and the ``shipskip`` command (services/shared/logs.py,
services/shared/metrics.py).
"""

import tempfile
from pathlib import Path
from typing import Literal, cast

import msgspec

from services.shared.config import ConfigError, Env

LogFormat = Literal["auto", "json", "text"]
AccessLog = Literal["off", "errors", "all"]

_LEVELS = ("debug", "info", "warning", "error")


class TelemetrySettings(msgspec.Struct, frozen=True):
    log_format: LogFormat
    """``json``: one JSON object per line; ``text``: for people; ``auto``: text on a terminal, else JSON."""
    log_level: str
    access_log: AccessLog
    """One line per answered request: none, only 4xx/5xx answers, or all of them."""
    metrics_dir: Path
    """Where each run of an HTTP service keeps its workers' metric files (a folder per run, inside this one)."""
    projector_host: str
    """The address the projector's monitoring endpoint listens on (0.0.0.0 in a container)."""
    projector_port: int
    """The projector's /metrics, /healthz and /readyz port (0: any free port, logged at start)."""
    metrics_host: str
    """The address the HTTP services' ops ports listen on (0.0.0.0 in a container, for the scraper)."""
    votes_metrics_port: int
    """The votes API's ops port: /metrics, /healthz, /readyz, off the public one (services/shared/ops_port.py)."""
    tally_metrics_port: int
    """The read API's ops port (0 for either: any free port, each worker its own; one worker only)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "TelemetrySettings":
        env = env or Env()
        return cls(
            log_format=cast(LogFormat, _choice(env, "SHIPSKIP_LOG_FORMAT", "auto", ("auto", "json", "text"))),
            log_level=_choice(env, "SHIPSKIP_LOG_LEVEL", "info", _LEVELS),
            access_log=cast(AccessLog, _choice(env, "SHIPSKIP_ACCESS_LOG", "errors", ("off", "errors", "all"))),
            metrics_dir=Path(env.text("SHIPSKIP_METRICS_DIR", str(Path(tempfile.gettempdir()) / "shipskip-metrics"))),
            projector_host=env.text("SHIPSKIP_PROJECTOR_HOST", "127.0.0.1"),
            projector_port=env.integer("SHIPSKIP_PROJECTOR_PORT", 8082, minimum=0, maximum=65535),
            metrics_host=env.text("SHIPSKIP_METRICS_HOST", "127.0.0.1"),
            votes_metrics_port=env.integer("SHIPSKIP_VOTES_METRICS_PORT", 9080, minimum=0, maximum=65535),
            tally_metrics_port=env.integer("SHIPSKIP_TALLY_METRICS_PORT", 9081, minimum=0, maximum=65535),
        )


def _choice(env: Env, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.text(name, default).lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value
