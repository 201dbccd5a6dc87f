"""The limit specs, the GCRA arithmetic (the same as admission.lua's) and the per-process fallback limiter."""

import pytest

from services.shared.config import ConfigError, Env
from services.votes.limits import Limit, LimitState, LocalLimiter, gcra_step, most_restrictive, parse_limit
from services.votes.ratelimit_headers import rate_limit_headers, rate_limited
from services.votes.settings import RateLimits

SECOND = 1_000_000
T0 = 1_700_000_000 * SECOND


@pytest.mark.parametrize(
    ("spec", "count", "period_s", "burst"),
    [("30/1m,10", 30, 60, 10), ("20/1h,5", 20, 3600, 5), ("2000/1s", 2000, 1, 2000), ("3/90", 3, 90, 3)],
)
def test_limit_specs(spec: str, count: int, period_s: int, burst: int) -> None:
    assert parse_limit("voter", "X", spec) == Limit("voter", count, period_s, burst)


@pytest.mark.parametrize("spec", ["", "30", "30/", "0/1m", "30/0s", "30/1m,0", "30/1 week", "-1/1m", "30/1m,10,2"])
def test_bad_limit_specs_name_the_variable(spec: str) -> None:
    with pytest.raises(ConfigError, match="SHIPSKIP_LIMIT_VOTES_PER_VOTER"):
        parse_limit("voter", "SHIPSKIP_LIMIT_VOTES_PER_VOTER", spec)


def test_defaults_and_the_off_switch() -> None:
    limits = RateLimits.from_env(Env({}, {}))
    assert limits.per_voter == Limit("voter", 30, 60, 10)
    assert limits.per_address == Limit("address", 300, 60, 60)
    assert limits.tokens_per_address == Limit("voter-tokens", 300, 3600, 100)
    assert limits.per_comparison == Limit("comparison", 2000, 1, 2000)
    off = RateLimits.from_env(Env({"SHIPSKIP_RATE_LIMITS": "off"}, {}))
    assert off == RateLimits(None, None, None, None)


def test_a_burst_passes_at_once_then_one_per_interval() -> None:
    limit = Limit("voter", 3, 60, 3)  # one per 20 s
    tat = None
    for expected_remaining in (2, 1, 0):
        step = gcra_step(limit, tat, T0)
        assert step.state == LimitState(limit, expected_remaining, step.new_tat_us - T0, 0)
        tat = step.new_tat_us
    refused = gcra_step(limit, tat, T0)
    assert refused.state.refused
    assert refused.state.retry_us == 20 * SECOND
    assert refused.state.reset_us == 60 * SECOND
    # 20 s later exactly one more passes.
    later = gcra_step(limit, tat, T0 + 20 * SECOND)
    assert not later.state.refused
    assert later.state.remaining == 0
    assert gcra_step(limit, later.new_tat_us, T0 + 20 * SECOND).state.retry_us == 20 * SECOND


def test_the_local_limiter_counts_all_limits_or_none() -> None:
    voter, address = Limit("voter", 2, 60, 2), Limit("address", 3, 60, 3)
    limiter = LocalLimiter()
    results = [limiter.check([(voter, "v1"), (address, "a")], now=T0) for _ in range(3)]
    assert [any(s.refused for s in states) for states in results] == [False, False, True]
    # The refused request did not use up the address: one more voter behind it still passes, then none.
    assert not any(s.refused for s in limiter.check([(voter, "v2"), (address, "a")], now=T0))
    refused = limiter.check([(voter, "v3"), (address, "a")], now=T0)
    assert [s.refused for s in refused] == [False, True]


def test_the_most_restrictive_limit_is_reported() -> None:
    voter, address = Limit("voter", 30, 60, 10), Limit("address", 300, 60, 60)
    states = [LimitState(voter, 4, 12 * SECOND, 0), LimitState(address, 50, 2 * SECOND, 0)]
    assert most_restrictive(states) == states[0]
    assert rate_limit_headers(states) == {
        "RateLimit-Policy": '"voter";q=30;w=60',
        "RateLimit": '"voter";r=4;t=12',
    }
    assert rate_limit_headers([]) == {}


def test_a_refusal_names_the_limit_and_when_to_retry() -> None:
    voter, address = Limit("voter", 30, 60, 10), Limit("address", 300, 60, 60)
    error = rate_limited([LimitState(voter, 0, 20 * SECOND, 1_500_000), LimitState(address, 0, 60 * SECOND, 0)])
    assert error.status == 429
    assert error.body.error == "rate_limited"
    assert error.body.retry_after == 2
    assert '"voter"' in error.body.detail
    assert error.headers["Retry-After"] == "2"
    assert error.headers["RateLimit"] == '"voter";r=0;t=20'


def test_a_changed_rate_starts_from_fresh_state() -> None:
    from services.votes.admission import limit_key
    from services.votes.limits import parse_limit

    before = parse_limit("voter", "SHIPSKIP_LIMIT_VOTES_PER_VOTER", "30/1m,10")
    after = parse_limit("voter", "SHIPSKIP_LIMIT_VOTES_PER_VOTER", "100000/1s,100000")
    assert limit_key(before, "v1") != limit_key(after, "v1")
    assert limit_key(before, "v1") == limit_key(parse_limit("voter", "X", "30/1m,10"), "v1")
