"""The tally processes' settings (projector and read API), read once from the environment at start."""

import msgspec

from services.shared.config import ConfigError, Env, ServerSettings
from services.tally.rebuild.bulk_load import MAX_BALLOTS


class TallySettings(msgspec.Struct, frozen=True):
    servers: ServerSettings
    port: int
    min_ballots: int
    """Below this many ballots a tool's ship_pct is null (the site shows "—")."""
    batch_size: int
    """Messages fetched and folded per Postgres transaction, at most."""
    batch_linger_s: float
    """While votes keep coming, how long after one fetch the next one is made, at least (projector.py)."""
    busy_linger_s: float
    """The same while they come faster than ``busy_rate`` (Projector._linger_s)."""
    busy_rate: float
    """Events a second past which the projector lingers ``busy_linger_s``."""
    max_ack_pending: int
    duplicate_window_s: float
    ballots_per_client_day: int
    """The counting policy: new ballots counted per comparison, client-address hash and UTC day."""
    admin_token: str | None
    """Bearer token of the /admin API; without one the admin API is off entirely."""
    admin_auth_failures: int = 10
    """Failed /admin logins an address may make per window; past them it gets 429 until the window ends."""
    admin_auth_window_s: float = 300.0
    partitions: int = 1
    """How many partitions the comparisons are split into, each folded by its own consumer (partitions.py)."""
    projector_partitions: tuple[int, ...] = (0,)
    """The partitions this projector process folds."""
    rebuild_memory_ballots: int = MAX_BALLOTS
    """Ballots a rebuild folds in memory before it folds the rest through the tables (tally/rebuild/bulk_load.py)."""

    @classmethod
    def from_env(cls, env: Env | None = None) -> "TallySettings":
        env = env or Env()
        partitions = env.integer("SHIPSKIP_PARTITIONS", 1, minimum=1, maximum=1024)
        return cls(
            servers=ServerSettings.from_env(env),
            port=env.integer("SHIPSKIP_TALLY_PORT", 8081, minimum=1, maximum=65535),
            min_ballots=env.integer("SHIPSKIP_MIN_BALLOTS", 10, minimum=1),
            batch_size=env.integer("SHIPSKIP_BATCH_SIZE", 1000, minimum=1, maximum=100_000),
            batch_linger_s=env.integer("SHIPSKIP_BATCH_LINGER_MS", 25, minimum=0, maximum=1000) / 1000,
            busy_linger_s=env.integer("SHIPSKIP_BUSY_LINGER_MS", 300, minimum=0, maximum=1000) / 1000,
            busy_rate=env.integer("SHIPSKIP_BUSY_RATE", 4000, minimum=1),
            max_ack_pending=env.integer("SHIPSKIP_MAX_ACK_PENDING", 20_000, minimum=1),
            duplicate_window_s=env.number("SHIPSKIP_DUPLICATE_WINDOW_S", 120.0, minimum=1.0),
            ballots_per_client_day=env.integer("SHIPSKIP_BALLOTS_PER_CLIENT_DAY", 100, minimum=1),
            admin_token=_admin_token(env),
            admin_auth_failures=env.integer("SHIPSKIP_ADMIN_AUTH_FAILURES", 10, minimum=1),
            admin_auth_window_s=env.number("SHIPSKIP_ADMIN_AUTH_WINDOW_S", 300.0, minimum=1.0),
            partitions=partitions,
            projector_partitions=_projector_partitions(env, partitions),
            rebuild_memory_ballots=env.integer("SHIPSKIP_REBUILD_MEMORY_BALLOTS", MAX_BALLOTS, minimum=0),
        )


def _admin_token(env: Env) -> str | None:
    token = env.raw("SHIPSKIP_ADMIN_TOKEN")
    if token is not None and len(token) < 16:
        raise ConfigError("SHIPSKIP_ADMIN_TOKEN must be at least 16 characters")
    return token


def _projector_partitions(env: Env, partitions: int) -> tuple[int, ...]:
    """SHIPSKIP_PROJECTOR_PARTITIONS: comma-separated indices below SHIPSKIP_PARTITIONS; default all of them."""
    name = "SHIPSKIP_PROJECTOR_PARTITIONS"
    items = env.items(name)
    if not items:
        return tuple(range(partitions))
    chosen: list[int] = []
    for item in items:
        try:
            index = int(item)
        except ValueError:
            raise ConfigError(f"{name}={env.raw(name)!r}: {item!r} is not a partition index") from None
        if not 0 <= index < partitions:
            raise ConfigError(
                f"{name}={env.raw(name)!r}: partition {index} does not exist with SHIPSKIP_PARTITIONS={partitions}"
                f" (0 to {partitions - 1})"
            )
        if index in chosen:
            raise ConfigError(f"{name}={env.raw(name)!r} names partition {index} twice")
        chosen.append(index)
    return tuple(sorted(chosen))
