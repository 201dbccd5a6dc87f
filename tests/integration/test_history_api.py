"""The history endpoints through real processes: events stamped over past hours are folded by the projector,
and ``/history`` and ``/community?as_of=`` answer them; a void takes the voter out of every past point; bad
queries are 422s naming the parameter; ETags give 304s."""

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.events import Event, VoteCast, VoterVoided, encode_event
from infra.stack.servers import ServerAddresses
from services.tally.store import expected_subject
from tests.support import (
    DEMO_TOOLS,
    Pipeline,
    projected_position,
    publish_raw,
    running_pipeline,
    stream_last_seq,
    wait_until,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
LEFT, RIGHT = DEMO_TOOLS[LLAMA]
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(servers, tmp_path_factory.mktemp("logs"), SHIPSKIP_MIN_BALLOTS="2") as running:
        yield running


def _cast(n: int, tool: str, verdict: str, voter: str, at: datetime) -> Event:
    return VoteCast(f"history-{n}", LLAMA, tool, verdict, voter, at)  # type: ignore[arg-type]


def _publish(servers: ServerAddresses, events: list[Event]) -> None:
    messages = [(expected_subject(e), encode_event(e)) for e in events]
    asyncio.run(publish_raw(servers, messages))
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head, timeout=60, interval=0.1)


@pytest.fixture(scope="module")
def start(pipeline: Pipeline, servers: ServerAddresses) -> datetime:
    """Votes over three past hours, from the start of the hour five hours ago."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 5 * HOUR
    _publish(
        servers,
        [
            _cast(1, LEFT, "ship", "a" * 32, start + timedelta(minutes=10)),
            _cast(2, LEFT, "skip", "b" * 32, start + timedelta(minutes=20)),
            _cast(3, LEFT, "ship", "c" * 32, start + HOUR + timedelta(minutes=5)),
            _cast(4, LEFT, "skip", "a" * 32, start + 2 * HOUR + timedelta(minutes=1)),
            _cast(5, RIGHT, "ship", "d" * 32, start + 2 * HOUR + timedelta(minutes=30)),
        ],
    )
    return start


def _get(pipeline: Pipeline, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{pipeline.read_url}{path}", params=params, timeout=10)


def _points(body: dict[str, Any], tool: str) -> list[tuple[str, int, int, float | None]]:
    (found,) = [t for t in body["tools"] if t["tool_id"] == tool]
    return [(p["end"], p["ship"], p["skip"], p["ship_pct"]) for p in found["points"]]


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def test_hourly_points_as_of_and_a_void_erasing_the_voter_from_past_points(
    pipeline: Pipeline, servers: ServerAddresses, start: datetime
) -> None:
    query = {"bucket": "hour", "from": _z(start), "to": _z(start + 4 * HOUR - timedelta(seconds=1))}
    answer = _get(pipeline, f"/v1/comparisons/{LLAMA}/history", **query)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["bucket"], body["start"], body["end"]) == ("hour", _z(start), _z(start + 4 * HOUR))
    ends = [_z(start + i * HOUR) for i in range(1, 5)]
    # min_ballots is 2: one ballot shows no share.
    assert _points(body, LEFT) == list(zip(ends, [1, 2, 1, 1], [1, 1, 2, 2], [50.0, 66.67, 33.33, 33.33], strict=True))
    assert _points(body, RIGHT) == list(zip(ends, [0, 0, 1, 1], [0, 0, 0, 0], [None] * 4, strict=True))
    assert all(p["votes"] == p["ship"] + p["skip"] for t in body["tools"] for p in t["points"])

    # as_of: to the minute; the live figure now.
    as_of = _get(
        pipeline, f"/v1/comparisons/{LLAMA}/community", as_of=_z(start + HOUR + timedelta(minutes=5, seconds=30))
    )
    assert as_of.status_code == 200, as_of.text
    figures = {t["tool_id"]: (t["ship"], t["skip"]) for t in as_of.json()["tools"]}
    assert as_of.json()["as_of"] == _z(start + HOUR + timedelta(minutes=5))
    assert figures == {LEFT: (1, 1), RIGHT: (0, 0)}, "the cast stamped in the minute asked for is not counted"
    now = _get(pipeline, f"/v1/comparisons/{LLAMA}/community", as_of=_z(datetime.now(UTC)))
    live = _get(pipeline, f"/v1/comparisons/{LLAMA}/community").json()
    assert [(t["ship"], t["skip"], t["ship_pct"]) for t in now.json()["tools"]] == [
        (t["ship"], t["skip"], t["ship_pct"]) for t in live["tools"]
    ]

    # A void takes the voter's ballots out of every point, the past ones too.
    _publish(servers, [VoterVoided("history-void", "b" * 32, "test", start + 4 * HOUR)])
    erased = _get(pipeline, f"/v1/comparisons/{LLAMA}/history", **query).json()
    assert _points(erased, LEFT) == list(zip(ends, [1, 2, 1, 1], [0, 0, 1, 1], [None, 100.0, 50.0, 50.0], strict=True))
    as_of = _get(pipeline, f"/v1/comparisons/{LLAMA}/community", as_of=_z(start + HOUR))
    assert {t["tool_id"]: (t["ship"], t["skip"]) for t in as_of.json()["tools"]}[LEFT] == (1, 0)


def test_day_buckets_default_to_the_last_thirty_days_ending_with_the_open_one(
    pipeline: Pipeline, start: datetime
) -> None:
    body = _get(pipeline, f"/v1/comparisons/{LLAMA}/history").json()
    assert body["bucket"] == "day"
    (left,) = [t for t in body["tools"] if t["tool_id"] == LEFT]
    assert len(left["points"]) == 30
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert left["points"][-1]["end"] == _z(today + timedelta(days=1))
    assert body["closed_until"] <= _z(today)
    assert left["points"][0]["votes"] == 0
    # A plain date names the whole day.
    day = _get(pipeline, f"/v1/comparisons/{LLAMA}/history", **{"from": "2026-01-01", "to": "2026-01-03"}).json()
    assert [p["end"] for p in day["tools"][0]["points"]] == [
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
        "2026-01-04T00:00:00Z",
    ]


def test_etag_gives_a_304_and_a_closed_range_is_cached_long(pipeline: Pipeline, start: datetime) -> None:
    path = f"/v1/comparisons/{LLAMA}/history"
    closed = _get(pipeline, path, bucket="hour", **{"from": _z(start), "to": _z(start + HOUR)})
    assert closed.headers["cache-control"].startswith("public, max-age=3600")
    again = httpx.get(
        f"{pipeline.read_url}{path}",
        params={"bucket": "hour", "from": _z(start), "to": _z(start + HOUR)},
        headers={"If-None-Match": closed.headers["etag"]},
    )
    assert again.status_code == 304
    assert again.content == b""
    open_range = _get(pipeline, path, bucket="hour")
    assert "max-age=1," in open_range.headers["cache-control"]
    as_of = _get(pipeline, f"/v1/comparisons/{LLAMA}/community", as_of=_z(start))
    assert as_of.headers["cache-control"].startswith("public, max-age=3600")
    assert (
        httpx.get(
            f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community",
            params={"as_of": _z(start)},
            headers={"If-None-Match": as_of.headers["etag"]},
        ).status_code
        == 304
    )


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"bucket": "week"}, "bucket:"),
        ({"from": "yesterday"}, "from:"),
        ({"to": "2026-13-01"}, "to:"),
        ({"from": "2026-11-01T10:00:00"}, "from:"),  # no offset
        ({"from": "2026-11-05", "to": "2026-11-01"}, "from:"),
        ({"from": "2099-01-01"}, "from:"),
        ({"bucket": "hour", "from": "2026-01-01", "to": "2026-03-01"}, "from:"),  # too many points
        ({"bucket": ["day", "hour"]}, "bucket:"),
    ],
)
def test_bad_history_queries_are_422s_naming_the_parameter(
    pipeline: Pipeline, params: dict[str, Any], named: str
) -> None:
    answer = _get(pipeline, f"/v1/comparisons/{LLAMA}/history", **params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(named), answer.text


@pytest.mark.parametrize("as_of", ["soon", "2026-11-01T10:00:00", "2099-01-01T00:00:00Z"])
def test_bad_as_of_is_a_422_naming_it(pipeline: Pipeline, as_of: str) -> None:
    answer = _get(pipeline, f"/v1/comparisons/{LLAMA}/community", as_of=as_of)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("as_of:")


def test_an_unknown_comparison_is_a_404(pipeline: Pipeline) -> None:
    assert _get(pipeline, "/v1/comparisons/no-such-thing/history").status_code == 404
    assert _get(pipeline, "/v1/comparisons/no-such-thing/community", as_of="2026-11-01T00:00:00Z").status_code == 404
