"""The abuse-protection settings of the votes service, each read once and refused with the variable's name."""

import ipaddress

import pytest

from services.shared.config import ConfigError, Env
from services.votes.settings import VotesSettings

BASE = {
    "SHIPSKIP_NATS_URL": "nats://127.0.0.1:1",
    "SHIPSKIP_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
    "SHIPSKIP_REDIS_URL": "redis://127.0.0.1:1/0",
    "SHIPSKIP_TOKEN_KEYS": "k" * 16,
    "SHIPSKIP_HASH_KEY": "h" * 16,
}


def settings(**extra: str) -> VotesSettings:
    return VotesSettings.from_env(Env({**BASE, **extra}, {}))


def test_defaults_are_safe_for_a_public_site() -> None:
    defaults = settings()
    assert defaults.cors_origins == []
    assert defaults.trusted_proxies == []
    assert defaults.cookie_secure is True
    assert defaults.rate_limits.per_voter is not None


def test_origins_and_proxies() -> None:
    configured = settings(
        SHIPSKIP_CORS_ORIGINS="https://widgets.example.com, http://localhost:3000",
        SHIPSKIP_TRUSTED_PROXIES="10.0.0.0/8,127.0.0.1,::1",
    )
    assert configured.cors_origins == ["https://widgets.example.com", "http://localhost:3000"]
    assert configured.trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHIPSKIP_CORS_ORIGINS", "https://widgets.example.com/embed"),
        ("SHIPSKIP_CORS_ORIGINS", "widgets.example.com"),
        ("SHIPSKIP_CORS_ORIGINS", "*"),
        ("SHIPSKIP_CORS_ORIGINS", "https://Widgets.example.com"),
        ("SHIPSKIP_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("SHIPSKIP_LIMIT_VOTES_PER_ADDRESS", "lots"),
        ("SHIPSKIP_RATE_LIMITS", "sometimes"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        settings(**{variable: value})
