"""The widget and the demo comparison page in a real browser (Debian's Chromium driven by Playwright).

Everything is real: the page comes from the votes service, votes go through it into JetStream, the projector
folds them, and the figure comes back through the read API's push stream.
"""

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from infra.stack.servers import ServerAddresses
from tests.support import Pipeline, reset_servers, service_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LLAMA = "llama-4-scout-vs-windsurf-swe-1"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it with apt)"
)


@pytest.fixture(scope="module")
def site(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    asyncio.run(reset_servers(servers))
    # One ballot is enough to show a share, so a single click shows a percentage; a voter may vote 4 times.
    env = service_env(
        servers, SHIPSKIP_MIN_BALLOTS="1", SHIPSKIP_RATE_LIMITS="on", SHIPSKIP_LIMIT_VOTES_PER_VOTER="4/1h,4"
    )
    pipeline = Pipeline(servers, env, tmp_path_factory.mktemp("browser-logs"))
    try:
        pipeline.start("projector")
        pipeline.start("read")
        pipeline.env["SHIPSKIP_PUBLIC_READ_API"] = pipeline.read_url
        pipeline.start("votes")
        yield pipeline
    finally:
        pipeline.stop()


@pytest.fixture(scope="module")
def browser(site: Pipeline) -> Iterator[Browser]:
    # After ``site``: its set-up uses asyncio.run, which cannot run inside Playwright's sync loop.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


def open_page(browser: Browser, site: Pipeline) -> Page:
    page = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
    page.goto(f"{site.votes_url}/compare/{LLAMA}")
    return page


def card(page: Page, name: str):  # type: ignore[no-untyped-def]
    return page.locator("section.card").filter(has_text=name)


def test_the_page_renders_both_cards_with_the_panel_figures(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site)
    expect(page.locator("h1")).to_have_text("Llama 4 Scout Fine-Tuning Toolkit vs Windsurf SWE-1 Family")
    llama, windsurf = card(page, "Llama 4 Scout Fine-Tuning Toolkit"), card(page, "Windsurf SWE-1 Family")
    expect(llama).to_contain_text("75%")
    expect(llama).to_contain_text("Panel ship")
    expect(llama).to_contain_text("Free")
    expect(windsurf).to_contain_text("100%")
    expect(page.locator("blockquote")).to_have_count(8)
    expect(llama.get_by_role("button", name="Ship")).to_be_visible()
    expect(llama.get_by_role("status")).to_have_count(1)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "comparison-page.png"), full_page=True)
    page.context.close()


def test_a_click_counts_and_another_browser_sees_it_live(browser: Browser, site: Pipeline) -> None:
    voter, watcher = open_page(browser, site), open_page(browser, site)
    figure = card(watcher, "Llama 4 Scout Fine-Tuning Toolkit").locator("[data-shipskip]")
    expect(figure).to_contain_text("Community: — (0 votes)")
    ship = card(voter, "Llama 4 Scout Fine-Tuning Toolkit").get_by_role("button", name="Ship")
    ship.click()
    expect(ship).to_have_attribute("aria-pressed", "true")
    own = card(voter, "Llama 4 Scout Fine-Tuning Toolkit").locator("[data-shipskip]")
    expect(own).to_contain_text("100% ship · 1 votes", timeout=1000)
    expect(figure).to_contain_text("100% ship · 1 votes", timeout=2000)  # pushed to the other context

    skip = card(voter, "Llama 4 Scout Fine-Tuning Toolkit").get_by_role("button", name="Skip")
    skip.click()  # change of mind
    expect(skip).to_have_attribute("aria-pressed", "true")
    expect(ship).to_have_attribute("aria-pressed", "false")
    expect(figure).to_contain_text("0% ship · 1 votes", timeout=2000)
    skip.click()  # clicking the chosen button again takes the vote back
    expect(skip).to_have_attribute("aria-pressed", "false")
    expect(figure).to_contain_text("Community: — (0 votes)", timeout=2000)
    voter.context.close()
    watcher.context.close()


def test_keyboard_only_voting(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site)
    windsurf = card(page, "Windsurf SWE-1 Family")
    ship = windsurf.get_by_role("button", name="Ship")
    for _ in range(20):  # Tab through the page until the Windsurf Ship button has the focus
        page.keyboard.press("Tab")
        if ship.evaluate("b => b.getRootNode().activeElement === b"):
            break
    else:
        pytest.fail("the Ship button cannot be reached with Tab")
    page.keyboard.press("Enter")
    expect(ship).to_have_attribute("aria-pressed", "true")
    expect(windsurf.locator("[data-shipskip]")).to_contain_text("100% ship", timeout=2000)
    page.context.close()


def test_a_refused_vote_rolls_back_and_says_when_to_retry(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site)
    llama = card(page, "Llama 4 Scout Fine-Tuning Toolkit")
    ship, skip = llama.get_by_role("button", name="Ship"), llama.get_by_role("button", name="Skip")
    note = llama.get_by_role("status")
    # The voter's allowance is 4 votes: use it up, then the next click is refused with 429.
    for button in (ship, skip, ship, skip):
        pressed = button.get_attribute("aria-pressed")
        button.click()
        expect(button).not_to_have_attribute("aria-pressed", pressed or "false")
        expect(note).not_to_have_text("")
    before = skip.get_attribute("aria-pressed")
    ship.click()
    expect(note).to_contain_text("Too many votes — try again in")
    expect(skip).to_have_attribute("aria-pressed", before or "false")  # rolled back
    page.context.close()
