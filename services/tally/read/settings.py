"""The read API's settings for live figures (streams and view upkeep), read once from the environment."""

import msgspec

from services.shared.client_address import Network, parse_networks
from services.shared.config import ConfigError, Env
from services.shared.http_server_settings import HttpServerSettings

RESERVED_FOR_READS = 100
"""Connections a worker keeps beyond its stream limit, at the least, for plain reads."""
DEFAULT_STREAMS_PER_ADDRESS = 32
"""A household, an office or a school behind one address: a page or two each with a stream or two."""


class LiveSettings(msgspec.Struct, frozen=True):
    keepalive_s: float
    """An idle stream gets a comment line this often, so proxies keep it open."""
    max_streams: int
    """Open streams per process, at most; past it a stream request is a 503 with Retry-After."""
    max_streams_per_address: int
    """Open streams per client address in a process, at most; past it a stream request from there is a 429."""
    trusted_proxies: list[Network]
    """Peers whose X-Forwarded-For is believed (the client address a stream is counted under)."""
    resync_s: float
    """The view reloads from Postgres this often as a safety net (0: only when needed)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "LiveSettings":
        env = env or Env()
        connections = HttpServerSettings.from_env(env).connections
        # An open stream holds a connection until it ends: half of them by default, the rest for everything else.
        max_streams = env.integer("SHIPSKIP_SSE_MAX_STREAMS", max(1, connections // 2), minimum=1)
        if max_streams > connections - RESERVED_FOR_READS:
            # Streams would take (nearly) every connection granian takes, and the process would stop answering.
            raise ConfigError(
                f"SHIPSKIP_SSE_MAX_STREAMS={max_streams} leaves fewer than {RESERVED_FOR_READS} of granian's "
                f"{connections} connections per worker for reads (raise GRANIAN_BACKPRESSURE)"
            )
        return cls(
            keepalive_s=env.number("SHIPSKIP_SSE_KEEPALIVE_S", 15.0, minimum=0.05),
            max_streams=max_streams,
            max_streams_per_address=env.integer(
                "SHIPSKIP_SSE_MAX_STREAMS_PER_ADDRESS", DEFAULT_STREAMS_PER_ADDRESS, minimum=1
            ),
            trusted_proxies=parse_networks("SHIPSKIP_TRUSTED_PROXIES", env.items("SHIPSKIP_TRUSTED_PROXIES")),
            resync_s=env.number("SHIPSKIP_VIEW_RESYNC_S", 30.0, minimum=0.0),
        )
