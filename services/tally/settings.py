"""The tally processes' settings (projector and read API), read once from the environment at start."""

import msgspec

from services.shared.config import ConfigError, Env, ServerSettings


class TallySettings(msgspec.Struct, frozen=True):
    servers: ServerSettings
    port: int
    min_ballots: int
    """Below this many ballots a tool's ship_pct is null (the site shows "—")."""
    batch_size: int
    """Messages fetched and folded per Postgres transaction, at most."""
    max_ack_pending: int
    duplicate_window_s: float
    ballots_per_client_day: int
    admin_token: str | None
    """Bearer token of the /admin API; without one the admin API is off entirely."""
    """The counting policy: new ballots counted per comparison, client-address hash and UTC day."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "TallySettings":
        env = env or Env()
        return cls(
            servers=ServerSettings.from_env(env),
            port=env.integer("SHIPSKIP_TALLY_PORT", 8081, minimum=1, maximum=65535),
            min_ballots=env.integer("SHIPSKIP_MIN_BALLOTS", 10, minimum=1),
            batch_size=env.integer("SHIPSKIP_BATCH_SIZE", 1000, minimum=1, maximum=100_000),
            max_ack_pending=env.integer("SHIPSKIP_MAX_ACK_PENDING", 20_000, minimum=1),
            duplicate_window_s=env.number("SHIPSKIP_DUPLICATE_WINDOW_S", 120.0, minimum=1.0),
            ballots_per_client_day=env.integer("SHIPSKIP_BALLOTS_PER_CLIENT_DAY", 100, minimum=1),
            admin_token=_admin_token(env),
        )


def _admin_token(env: Env) -> str | None:
    token = env.raw("SHIPSKIP_ADMIN_TOKEN")
    if token is not None and len(token) < 16:
        raise ConfigError("SHIPSKIP_ADMIN_TOKEN must be at least 16 characters")
    return token
