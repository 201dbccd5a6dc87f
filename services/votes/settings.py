"""The votes service's settings, read once from the environment at start."""

import msgspec

from services.shared.client_address import Network, parse_networks
from services.shared.config import ConfigError, Env, ServerSettings, http_base_url, secret_key, secret_keys
from services.votes.identity import CLOCK_SKEW_S
from services.votes.limits import Limit, parse_limit

# name in the RateLimit fields, variable, default ("N/period,burst")
LIMIT_DEFAULTS = {
    "voter": ("SHIPSKIP_LIMIT_VOTES_PER_VOTER", "30/1m,10"),
    "address": ("SHIPSKIP_LIMIT_VOTES_PER_ADDRESS", "300/1m,60"),
    "voter-tokens": ("SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS", "300/1h,100"),
    "comparison": ("SHIPSKIP_LIMIT_VOTES_PER_COMPARISON", "2000/1s,2000"),
}


class RateLimits(msgspec.Struct, frozen=True):
    """Every limit, or None for each when ``SHIPSKIP_RATE_LIMITS=off`` (load tests)."""

    per_voter: Limit | None
    per_address: Limit | None
    tokens_per_address: Limit | None
    per_comparison: Limit | None

    @classmethod
    def from_env(cls, env: Env) -> "RateLimits":
        limits = {name: parse_limit(name, variable, env.text(variable, default)) for name, (variable, default) in
                  LIMIT_DEFAULTS.items()}  # fmt: skip
        if not env.flag("SHIPSKIP_RATE_LIMITS", True):
            return cls(None, None, None, None)
        return cls(limits["voter"], limits["address"], limits["voter-tokens"], limits["comparison"])


def _origins(env: Env, name: str) -> list[str]:
    origins = env.items(name)
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest or origin != origin.lower():
            raise ConfigError(
                f"{name}: {origin!r} is not an origin like https://widgets.example.com (lowercase, no path)"
            )
    return origins


class VotesSettings(msgspec.Struct, frozen=True):
    servers: ServerSettings
    port: int
    token_keys: list[bytes]
    """Accepted voter-token signing keys; the first one signs new tokens."""
    hash_key: bytes
    """Keys the hashes of voter ids (client addresses are hashed under a random day key, see day_keys.py)."""
    token_ttl_s: int
    token_clock_skew_s: int
    """How far in the future a token's issue time may be (clocks of the copies differ a little), no further."""
    publish_timeout_s: float
    duplicate_window_s: float
    """JetStream's duplicate window, and how long an Idempotency-Key's first answer is remembered."""
    cookie_secure: bool
    """Secure + SameSite=None cookies for widgets on other sites; off only for plain-http local development."""
    rate_limits: RateLimits
    trusted_proxies: list[Network]
    """Peers whose X-Forwarded-For is believed."""
    cors_origins: list[str]
    """Sites whose pages may call the API from a browser, with the voter cookie."""
    redis_timeout_s: float
    redis_pool_size: int
    public_read_api: str | None
    """The read API's public base URL, for the demo pages' widgets; by default the page's host on read_port."""
    read_port: int

    @classmethod
    def from_env(cls, env: Env | None = None) -> "VotesSettings":
        env = env or Env()
        return cls(
            servers=ServerSettings.from_env(env),
            port=env.integer("SHIPSKIP_VOTES_PORT", 8080, minimum=1, maximum=65535),
            token_keys=secret_keys(env, "SHIPSKIP_TOKEN_KEYS"),
            hash_key=secret_key(env, "SHIPSKIP_HASH_KEY"),
            token_ttl_s=env.integer("SHIPSKIP_TOKEN_TTL_DAYS", 365, minimum=1) * 86400,
            token_clock_skew_s=env.integer("SHIPSKIP_TOKEN_CLOCK_SKEW_S", CLOCK_SKEW_S, minimum=0, maximum=86400),
            publish_timeout_s=env.number("SHIPSKIP_PUBLISH_TIMEOUT_S", 2.0, minimum=0.05),
            duplicate_window_s=env.number("SHIPSKIP_DUPLICATE_WINDOW_S", 120.0, minimum=1.0),
            cookie_secure=env.flag("SHIPSKIP_COOKIE_SECURE", True),
            rate_limits=RateLimits.from_env(env),
            trusted_proxies=parse_networks("SHIPSKIP_TRUSTED_PROXIES", env.items("SHIPSKIP_TRUSTED_PROXIES")),
            cors_origins=_origins(env, "SHIPSKIP_CORS_ORIGINS"),
            redis_timeout_s=env.number("SHIPSKIP_REDIS_TIMEOUT_S", 0.5, minimum=0.01),
            redis_pool_size=env.integer("SHIPSKIP_REDIS_POOL_SIZE", 64, minimum=1, maximum=10_000),
            public_read_api=http_base_url(env, "SHIPSKIP_PUBLIC_READ_API"),
            read_port=env.integer("SHIPSKIP_TALLY_PORT", 8081, minimum=1, maximum=65535),
        )
