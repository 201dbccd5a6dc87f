"""What the Community figure says about itself: not enough votes yet, unavailable, or how old it is.

A read API process of the test's own is started late and stopped early, so the page meets it down, then live,
then gone. The page's clock is Playwright's, so "five minutes later" takes no five minutes.
"""

import re

import httpx
import pytest
from playwright.sync_api import Browser, expect

from infra.stack.processes import start_service
from infra.stack.servers import free_port
from tests.browser.host_site import HostSite, embed_page
from tests.browser.support import SMOL, SMOL_NAME, SMOL_TOOL, needs_chromium, new_context
from tests.support import Pipeline, new_voter, send_vote

pytestmark = needs_chromium


def test_unavailable_then_not_enough_votes_then_the_age_of_stale_figures(
    browser: Browser, site: Pipeline, host: HostSite, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    read_api = f"http://127.0.0.1:{port}"
    env = {name: value for name, value in site.env.items() if name != "SHIPSKIP_MIN_BALLOTS"}  # the default 10
    place = {"comparison": SMOL, "tool": SMOL_TOOL, "tool-name": SMOL_NAME, "votes-api": site.votes_url}
    url = host.page("/states", embed_page(f"{site.votes_url}/widget.js", [{**place, "read-api": read_api}]))
    page = new_context(browser).new_page()
    page.clock.install()
    page.goto(url)
    value, detail, age = (page.locator(f"[data-shipskip] .{part}") for part in ("value", "detail", "age"))
    expect(detail).to_have_text("Figures unavailable")  # the read API is not there
    expect(value).to_have_text("—")

    read = start_service("read", env, tmp_path_factory.mktemp("late-read"), port)
    try:
        expect(detail).to_have_text(re.compile(r"^Not enough votes yet \(\d+ of 10\)$"), timeout=10_000)
        shown = int(re.findall(r"\d+", detail.text_content() or "")[0])
        with httpx.Client(timeout=10.0) as client:  # another visitor votes: the count goes up, live
            vote = send_vote(client, site.votes_url, new_voter(client, site.votes_url), "ship", SMOL, SMOL_TOOL)
            assert vote.status_code == 202, vote.text
        expect(detail).to_have_text(f"Not enough votes yet ({shown + 1} of 10)", timeout=3000)
        expect(age).to_have_text("")

        # The stream is gone; the figures stay, and soon say how old they are. Once the browser's attempt to
        # reconnect (2 s later, in real time) has failed, the widget has surely seen the loss.
        with page.expect_event("requestfailed", lambda request: request.url.endswith("/stream"), timeout=15_000):
            read.stop()
        page.clock.fast_forward(30_000)
        expect(age).to_have_text("")  # a moment's loss (a restart, a reconnect) says nothing
        page.clock.fast_forward("05:00")
        expect(age).to_have_text(re.compile(r"^Updated 5 min ago$"))
        expect(detail).to_have_text(f"Not enough votes yet ({shown + 1} of 10)")

        read = start_service("read", env, tmp_path_factory.mktemp("read-again"), port)
        expect(age).to_have_text("", timeout=10_000)  # live again
    finally:
        read.stop()
        page.context.close()
