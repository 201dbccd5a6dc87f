"""The widget and the demo comparison page in a real browser (Debian's Chromium driven by Playwright).

Everything is real: the page comes from the votes service, votes go through it into JetStream, the projector
folds them, and the figure comes back through the read API's push stream.
"""

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect

from tests.browser.support import (
    LLAMA,
    LLAMA_NAME,
    SMOL,
    WINDSURF_NAME,
    card,
    community,
    needs_chromium,
    new_context,
    note,
    open_page,
)
from tests.support import Pipeline

pytestmark = needs_chromium

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def figure_row(page: Page, name: str) -> list[dict[str, object]]:
    """The figures of a tool's card, in page order: label, value and where each sits."""
    rows: list[dict[str, object]] = (
        card(page, name)
        .locator(".figures > *")
        .evaluate_all(
            """items => items.map(item => {
            const root = item.shadowRoot || item;
            const box = item.getBoundingClientRect();
            return {label: root.querySelector('.label').textContent, value: root.querySelector('.value').textContent,
                    top: Math.round(box.top), width: Math.round(box.width)};
        })"""
        )
    )
    return rows


def test_the_page_shows_panel_community_and_entry_as_the_site_does(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site)
    response = page.request.get(page.url)
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    # An icon of the page's own, so that the browser does not ask for /favicon.ico (which is not there).
    icon = page.locator("link[rel=icon]").get_attribute("href", timeout=1000)
    assert icon is not None
    assert icon.startswith("data:image/svg+xml,")
    expect(page.locator("h1")).to_have_text("Llama 4 Scout Fine-Tuning Toolkit vs Windsurf SWE-1 Family")
    for name, panel in ((LLAMA_NAME, "75%"), (WINDSURF_NAME, "100%")):
        expect(community(page, name).locator(".label")).to_have_text("Community")
        row = figure_row(page, name)
        assert [(f["label"], f["value"]) for f in row] == [("Panel ship", panel), ("Community", "—"), ("Entry", "Free")]
        assert len({f["top"] for f in row}) == 1, row  # one row of three equal figures
        assert max(int(str(f["width"])) for f in row) - min(int(str(f["width"])) for f in row) <= 1, row
        buttons = card(page, name).get_by_role("group").bounding_box()
        figures = card(page, name).locator(".figures").bounding_box()
        assert buttons is not None
        assert figures is not None
        assert buttons["y"] >= figures["y"] + figures["height"]  # the buttons below the figures
    expect(card(page, LLAMA_NAME)).not_to_contain_text("Reviewers")
    expect(page.locator("blockquote")).to_have_count(8)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "comparison-page.png"), full_page=True)
    page.context.close()


def test_the_widget_travels_compressed_to_browsers_that_take_it(browser: Browser, site: Pipeline) -> None:
    loaded: list[Response] = []
    page = new_context(browser).new_page()
    page.on("response", lambda response: loaded.append(response) if "/widget.js" in response.url else None)
    page.goto(f"{site.votes_url}/compare/{LLAMA}")
    expect(page.get_by_role("button", name="Ship").first).to_be_visible()  # it ran
    assert len(loaded) == 1
    headers = loaded[0].all_headers()
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert "accept-encoding" in headers["vary"].lower()
    page.context.close()
    with httpx.Client() as client:
        plain = client.get(f"{site.votes_url}/widget.js", headers={"Accept-Encoding": "identity"})
        packed = client.get(f"{site.votes_url}/widget.js", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in plain.headers
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.content == plain.content  # httpx undid the gzip
        assert int(packed.headers["content-length"]) < len(plain.content) / 2
        assert packed.headers["etag"] != plain.headers["etag"]  # a cache must not mix the two up
        again = client.get(
            f"{site.votes_url}/widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]}
        )
        assert again.status_code == 304


def test_a_click_counts_and_another_browser_sees_it_live(browser: Browser, site: Pipeline) -> None:
    voter, watcher = open_page(browser, site), open_page(browser, site)
    figure = community(watcher, LLAMA_NAME)
    expect(figure).to_contain_text("Not enough votes yet (0 of 1)")
    ship = card(voter, LLAMA_NAME).get_by_role("button", name="Ship")
    ship.click()
    expect(ship).to_have_attribute("aria-pressed", "true")
    expect(note(voter, LLAMA_NAME)).to_have_text("Thanks — your Ship is counted.")
    own = community(voter, LLAMA_NAME)
    expect(own.locator(".value")).to_have_text("100%", timeout=1000)
    expect(own.locator(".detail")).to_have_text("1 vote")
    expect(figure.locator(".value")).to_have_text("100%", timeout=2000)  # pushed to the other context

    skip = card(voter, LLAMA_NAME).get_by_role("button", name="Skip")
    skip.click()  # change of mind
    expect(skip).to_have_attribute("aria-pressed", "true")
    expect(ship).to_have_attribute("aria-pressed", "false")
    expect(figure.locator(".value")).to_have_text("0%", timeout=2000)
    skip.click()  # clicking the chosen button again takes the vote back
    expect(skip).to_have_attribute("aria-pressed", "false")
    expect(note(voter, LLAMA_NAME)).to_have_text("Your vote was taken back.")
    expect(figure).to_contain_text("Not enough votes yet (0 of 1)", timeout=2000)
    voter.context.close()
    watcher.context.close()


def test_keyboard_only_voting(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site)
    windsurf = card(page, WINDSURF_NAME)
    ship = windsurf.get_by_role("button", name="Ship")
    for _ in range(20):  # Tab through the page until the Windsurf Ship button has the focus
        page.keyboard.press("Tab")
        if ship.evaluate("b => b.getRootNode().activeElement === b"):
            break
    else:
        pytest.fail("the Ship button cannot be reached with Tab")
    page.keyboard.press("Enter")
    expect(ship).to_have_attribute("aria-pressed", "true")
    expect(community(page, WINDSURF_NAME).locator(".value")).to_have_text("100%", timeout=2000)
    assert ship.evaluate("b => b.getRootNode().activeElement === b")  # the focus stayed on the button
    page.context.close()


def test_a_refused_vote_rolls_back_and_says_when_to_retry(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, SMOL)
    windsurf = card(page, WINDSURF_NAME)
    ship, skip = windsurf.get_by_role("button", name="Ship"), windsurf.get_by_role("button", name="Skip")
    status = note(page, WINDSURF_NAME)
    # The voter's allowance is 4 votes: use it up, then the next click is refused with 429.
    for button, said in ((ship, "Ship"), (skip, "Skip"), (ship, "Ship"), (skip, "Skip")):
        button.click()
        expect(button).to_have_attribute("aria-pressed", "true")
        expect(status).to_have_text(f"Thanks — your {said} is counted.")
    ship.click()
    expect(status).to_have_text("You have voted a lot in a short time — try again in 15 min.")
    expect(skip).to_have_attribute("aria-pressed", "true")  # rolled back
    expect(ship).to_have_attribute("aria-pressed", "false")
    page.context.close()
