"""The read API's settings for live figures (streams and view upkeep), read once from the environment."""

import msgspec

from services.shared.config import Env

GRANIAN_DEFAULT_BACKPRESSURE = 1024
"""granian's requests in progress per worker (its backlog over one worker). An open stream holds one until it
ends, and past the limit granian stops answering anything, plain reads included."""
RESERVED_FOR_READS = 100


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
        backpressure = env.integer("GRANIAN_BACKPRESSURE", GRANIAN_DEFAULT_BACKPRESSURE, minimum=1)
        return cls(
            keepalive_s=env.number("SHIPSKIP_SSE_KEEPALIVE_S", 15.0, minimum=0.05),
            max_streams=env.integer("SHIPSKIP_SSE_MAX_STREAMS", max(1, backpressure - RESERVED_FOR_READS), minimum=1),
            resync_s=env.number("SHIPSKIP_VIEW_RESYNC_S", 30.0, minimum=0.0),
        )
