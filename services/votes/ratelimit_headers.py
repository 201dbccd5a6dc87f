"""The IETF rate-limit header fields (draft-ietf-httpapi-ratelimit-headers) and the 429 answer.

``RateLimit-Policy: "voter";q=30;w=60`` names the policy (30 per 60 s); ``RateLimit: "voter";r=9;t=2`` says
9 requests are left now and the burst is whole again in 2 s. Only the most restrictive of the limits that apply
to a request is reported, on every answer that went through the limiter, allowed or refused.
"""

from collections.abc import Sequence

from services.shared.http import ApiError
from services.votes.limits import LimitState, most_restrictive, whole_seconds


def rate_limit_headers(states: Sequence[LimitState]) -> dict[str, str]:
    state = most_restrictive(states)
    if state is None:
        return {}
    limit = state.limit
    return {
        "RateLimit-Policy": f'"{limit.name}";q={limit.count};w={limit.period_s}',
        "RateLimit": f'"{limit.name}";r={state.remaining};t={whole_seconds(state.reset_us)}',
    }


def rate_limited(states: Sequence[LimitState]) -> ApiError:
    """The 429 for a refused request: which limit, and when to retry (also as ``Retry-After``)."""
    state = most_restrictive(states)
    assert state is not None, "only a refused request is answered 429"
    assert state.refused, "only a refused request is answered 429"
    retry_after = max(1, whole_seconds(state.retry_us))
    return ApiError(
        429,
        "rate_limited",
        f'the "{state.limit.name}" limit ({state.limit.describe()}) is used up; retry in {retry_after} s',
        retry_after=retry_after,
        headers=rate_limit_headers(states),
        limit=state.limit.name,
    )
