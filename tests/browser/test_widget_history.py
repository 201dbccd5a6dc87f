"""The widget's trend line and the demo page's chart, drawn in Chromium from the real history.

Votes stamped over past days are published to the stream, folded by the projector and served by the read API's
/history; the page's widget draws them. Other tests vote on these tools today, so the last point is read from
the API, not assumed.
"""

import asyncio
import itertools
import re
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, expect

from contracts.events import VoteCast, VoterForgotten, encode_event
from contracts.subjects import MODERATION_SUBJECT, votes_subject
from infra.stack.servers import ServerAddresses
from tests.browser.support import SMOL, SMOL_NAME, SMOL_TOOL, WINDSURF_NAME, community, needs_chromium, open_page
from tests.support import Pipeline, projected_position, publish_raw, stream_last_seq, wait_until

pytestmark = needs_chromium

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"

T = TypeVar("T")


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """asyncio.run from a thread of its own: Playwright's sync API holds this thread's loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _publish_and_fold(servers: ServerAddresses, messages: list[tuple[str, bytes]]) -> None:
    _run(publish_raw(servers, messages))
    head = _run(stream_last_seq(servers))
    wait_until(lambda: _run(projected_position(servers)) >= head, timeout=60, interval=0.1)


@pytest.fixture(scope="module")
def history(site: Pipeline, servers: ServerAddresses) -> Iterator[dict[str, Any]]:
    """Three ships and a skip ten days ago, two skips five days ago; the history the read API then serves.

    The site is shared by the package's tests, and others expect these tools without votes: the voters are
    forgotten afterwards, which takes their ballots out of every figure (the product's own erasure)."""
    now = datetime.now(UTC)
    verdicts = [(10, "ship"), (10, "ship"), (10, "ship"), (10, "skip"), (5, "skip"), (5, "skip")]
    messages = []
    for n, (days, verdict) in enumerate(verdicts):
        event = VoteCast(f"trend-{n}", SMOL, SMOL_TOOL, verdict, f"trend-voter-{n}", now - timedelta(days=days))  # type: ignore[arg-type]
        messages.append((votes_subject(SMOL), encode_event(event)))
    _publish_and_fold(servers, messages)
    answer = httpx.get(f"{site.read_url}/v1/comparisons/{SMOL}/history", params={"bucket": "day"}, timeout=10)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    yield body
    forgets = [
        (MODERATION_SUBJECT, encode_event(VoterForgotten(f"trend-forget-{n}", f"trend-voter-{n}", now)))
        for n in range(len(verdicts))
    ]
    _publish_and_fold(servers, forgets)


def _shares(history: dict[str, Any], tool_id: str) -> list[float]:
    (tool,) = [t for t in history["tools"] if t["tool_id"] == tool_id]
    return [p["ship_pct"] for p in tool["points"] if p["ship_pct"] is not None]


def _change(first: float, last: float) -> str:
    change = round(last) - round(first)
    if change == 0:
        return "unchanged"
    return f"{'up' if change > 0 else 'down'} {abs(change)} point{'s' if abs(change) != 1 else ''}"


def test_the_sparkline_draws_the_last_30_days_and_says_the_change(
    browser: Browser, site: Pipeline, history: dict[str, Any]
) -> None:
    shares = _shares(history, SMOL_TOOL)
    # A point a day, as the figure stood at its end: 3 of 4 ship from ten days ago, 3 of 6 from five days ago.
    assert shares[:5] == [75.0] * 5
    assert shares[5] == 50.0
    page = open_page(browser, site, SMOL)
    sparkline = community(page, SMOL_NAME).locator("svg[role=img]")
    expect(sparkline).to_have_count(1)
    # Read again after the page has its history: a test may have voted meanwhile.
    shares = _shares(httpx.get(f"{site.read_url}/v1/comparisons/{SMOL}/history", timeout=10).json(), SMOL_TOOL)
    text = f"Last 30 days: 75% to {round(shares[-1])}%, {_change(shares[0], shares[-1])}"
    expect(sparkline).to_have_attribute("aria-label", text)
    expect(page.get_by_role("img", name=text, exact=True)).to_be_visible()
    expect(sparkline.locator("title")).to_have_text(text)
    points = sparkline.locator("polyline").get_attribute("points", timeout=1000)
    assert points is not None
    drawn = [tuple(float(v) for v in pair.split(",")) for pair in points.split()]
    assert len(drawn) == len(shares)
    # Left to right a day a step; 75 % higher on the image than 50 %.
    assert all(a[0] < b[0] for a, b in itertools.pairwise(drawn))
    assert drawn[0][1] == drawn[4][1] < drawn[5][1]
    box = sparkline.bounding_box()
    assert box is not None
    assert box["width"] > 20
    assert box["height"] > 5
    page.context.close()


def test_the_demo_page_charts_both_tools_with_the_change_in_words(
    browser: Browser, site: Pipeline, history: dict[str, Any]
) -> None:
    page = open_page(browser, site, SMOL)
    chart = page.locator("[data-shipskip][data-part=history]").locator("svg[role=img]")
    expect(chart).to_have_attribute(
        "aria-label", re.compile(r"^Community ship share, last 30 days\. SmolVLM2-2B: Last 30 days: 75% to ")
    )
    legend = page.locator("[data-shipskip][data-part=history]").locator(".legend")
    expect(legend).to_contain_text(f"{SMOL_NAME}: Last 30 days: 75% to")
    expect(legend).to_contain_text(f"{WINDSURF_NAME}:")
    polylines = chart.locator("polyline")
    expect(polylines).to_have_count(2)
    assert len((polylines.first.get_attribute("points", timeout=1000) or "").split()) >= 2
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "comparison-history.png"), full_page=True)
    page.context.close()
