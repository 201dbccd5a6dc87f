"""The read API's settings for live figures (streams and view upkeep), read once from the environment."""

import msgspec

from services.shared.config import ConfigError, Env

GRANIAN_DEFAULT_BACKLOG = 1024
"""granian's requests in progress per worker default to its backlog over its workers (GRANIAN_BACKPRESSURE unset).
An open stream holds one until it ends, and past the limit granian stops answering anything, plain reads included."""
RESERVED_FOR_READS = 100


def granian_backpressure(env: Env) -> int:
    """The requests in progress granian allows each worker, computed as granian does (granian/server/common.py).

    ``shipskip serve`` passes the worker count in GRANIAN_WORKERS as well as on granian's command line, so each
    worker sees it here.
    """
    configured = env.integer("GRANIAN_BACKPRESSURE", 0, minimum=1)
    if configured:
        return configured
    backlog = max(128, env.integer("GRANIAN_BACKLOG", GRANIAN_DEFAULT_BACKLOG, minimum=1))
    return max(1, backlog // env.integer("GRANIAN_WORKERS", 1, minimum=1, maximum=1024))


class LiveSettings(msgspec.Struct, frozen=True):
    keepalive_s: float
    """An idle stream gets a comment line this often, so proxies keep it open."""
    max_streams: int
    """Open streams per process, at most; past it a stream request is a 503 with Retry-After."""
    resync_s: float
    """The view reloads from Postgres this often as a safety net (0: only when needed)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "LiveSettings":
        env = env or Env()
        backpressure = granian_backpressure(env)
        max_streams = env.integer("SHIPSKIP_SSE_MAX_STREAMS", max(1, backpressure - RESERVED_FOR_READS), minimum=1)
        if max_streams >= backpressure:
            # Streams would take every request slot granian has, and the process would stop answering at all.
            raise ConfigError(
                f"SHIPSKIP_SSE_MAX_STREAMS={max_streams} leaves no room for reads under granian's {backpressure} "
                "requests in progress per worker (raise GRANIAN_BACKPRESSURE)"
            )
        return cls(
            keepalive_s=env.number("SHIPSKIP_SSE_KEEPALIVE_S", 15.0, minimum=0.05),
            max_streams=max_streams,
            resync_s=env.number("SHIPSKIP_VIEW_RESYNC_S", 30.0, minimum=0.0),
        )
