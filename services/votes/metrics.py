"""The votes API's own metrics, besides the request metrics every service has (services/shared/observed_asgi.py).

Counted from the answers themselves (``answered``, told of each by the ASGI wrapper), so the vote path pays one
dictionary lookup and an increment: 202 is a vote accepted, 200 a repeat that changed nothing, 4xx/5xx a refusal
with the ErrorBody ``error`` code as its reason. The publisher times each JetStream publish (``published``).
All of it is counted through the worker's buffer (services/shared/metric_buffer.py).
"""

from litestar.types import Scope
from prometheus_client import Counter

from services.shared.metric_buffer import BufferedHistogramFamily, MetricBuffer
from services.shared.observed_asgi import refusal_of

CAST_ROUTE = "/v1/comparisons/{comparison_id}/votes"
RETRACT_ROUTE = "/v1/comparisons/{comparison_id}/votes/{tool_id}"
_ACTIONS = {CAST_ROUTE: "cast", RETRACT_ROUTE: "retract"}

# A publish acked by a local JetStream takes well under a millisecond; a refused one waits out its timeout (2 s).
PUBLISH_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class VotesMetrics:
    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self.accepted = Counter(
            "shipskip_votes_accepted",
            "Votes and retractions stored in the stream (answered 202), retries of a stored request included",
            ["action"],
            registry=None,
        )
        self.unchanged = Counter(
            "shipskip_votes_unchanged",
            "Votes and retractions that repeated the voter's current ballot (answered 200, nothing stored)",
            ["action"],
            registry=None,
        )
        self.refused = Counter(
            "shipskip_votes_refused",
            "Votes and retractions refused, by the error code of the answer (rate_limited, unknown_tool, ...)",
            ["action", "reason"],
            registry=None,
        )
        self.rate_limited = Counter(
            "shipskip_rate_limit_hits",
            "Requests refused by a rate limit (429), by the limit's policy name (voter, address, ...)",
            ["limit"],
            registry=None,
        )
        self.publish_seconds = BufferedHistogramFamily(
            "shipskip_publish_seconds", "JetStream publish of a vote, until acknowledged or failed", [], PUBLISH_BUCKETS
        )
        self._accepted = {action: self.accepted.labels(action) for action in _ACTIONS.values()}
        self._unchanged = {action: self.unchanged.labels(action) for action in _ACTIONS.values()}
        self._publish = self.publish_seconds.labels()

    def published(self, seconds: float) -> None:
        """One publish to JetStream took this long (acked or failed)."""
        self._buffer.observe(self._publish, seconds)

    def answered(self, scope: Scope, route: str, status: int) -> None:
        refusal = refusal_of(scope) if status >= 400 else None
        if refusal is not None and refusal[1] is not None:
            self.rate_limited.labels(refusal[1]).inc()
        action = _ACTIONS.get(route)
        if action is None:
            return
        if status == 202:
            self._buffer.count(self._accepted[action])
        elif status == 200:
            self._buffer.count(self._unchanged[action])
        elif status >= 400:
            reason = refusal[0] if refusal is not None else f"http_{status}"
            self.refused.labels(action, reason).inc()
