"""The votes service's settings, read once from the environment at start."""

import msgspec

from services.shared.config import Env, ServerSettings, secret_keys


class VotesSettings(msgspec.Struct, frozen=True):
    servers: ServerSettings
    port: int
    token_keys: list[bytes]
    """Accepted voter-token signing keys; the first one signs new tokens."""
    hash_key: bytes
    """Keys the hashes of voter ids and client addresses written into events."""
    token_ttl_s: int
    publish_timeout_s: float
    duplicate_window_s: float
    cookie_secure: bool
    """Secure + SameSite=None cookies for widgets on other sites; off only for plain-http local development."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "VotesSettings":
        env = env or Env()
        return cls(
            servers=ServerSettings.from_env(env),
            port=env.integer("SHIPSKIP_VOTES_PORT", 8080, minimum=1, maximum=65535),
            token_keys=secret_keys(env, "SHIPSKIP_TOKEN_KEYS"),
            hash_key=secret_keys(env, "SHIPSKIP_HASH_KEY")[0],
            token_ttl_s=env.integer("SHIPSKIP_TOKEN_TTL_DAYS", 365, minimum=1) * 86400,
            publish_timeout_s=env.number("SHIPSKIP_PUBLISH_TIMEOUT_S", 2.0, minimum=0.05),
            duplicate_window_s=env.number("SHIPSKIP_DUPLICATE_WINDOW_S", 120.0, minimum=1.0),
            cookie_secure=env.flag("SHIPSKIP_COOKIE_SECURE", True),
        )
