"""The widget for people who use a screen reader or a phone, in a real browser."""

from playwright.sync_api import Browser, expect

from tests.browser.support import (
    LLAMA,
    LLAMA_NAME,
    WINDSURF_NAME,
    card,
    community,
    needs_chromium,
    note,
    open_page,
)
from tests.support import Pipeline

pytestmark = needs_chromium

# Records every text change of every live region (aria-live, or a role that is one) in the page's widgets.
WATCH_LIVE_REGIONS = """() => {
    window.liveChanges = [];
    const live = '[aria-live]:not([aria-live=off]), [role=status], [role=alert], [role=log], [role=timer]';
    for (const host of document.querySelectorAll('[data-shipskip]')) {
        for (const region of host.shadowRoot.querySelectorAll(live)) {
            new MutationObserver(() => window.liveChanges.push(region.textContent))
                .observe(region, {childList: true, characterData: true, subtree: true});
        }
    }
}"""


def test_each_button_names_its_tool(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site)
    for name in (LLAMA_NAME, WINDSURF_NAME):
        for verdict in ("Ship", "Skip"):
            button = page.get_by_role("button", name=f"{verdict} {name}", exact=True)
            expect(button).to_have_count(1)
            expect(button).to_have_text(f"{verdict} {name}")  # the name is there for screen readers ...
            assert button.evaluate("b => b.firstChild.textContent") == verdict  # ... the eye sees the verdict
        expect(page.get_by_role("group", name=f"Your verdict on {name}", exact=True)).to_have_count(1)
    page.context.close()


def test_only_the_visitors_own_vote_is_read_out(browser: Browser, site: Pipeline) -> None:
    listener, other = open_page(browser, site, LLAMA), open_page(browser, site, LLAMA)
    figure = community(listener, WINDSURF_NAME)
    expect(figure.locator(".detail")).not_to_have_text("")  # the figures are in
    before = figure.locator(".detail").text_content()
    listener.evaluate(WATCH_LIVE_REGIONS)
    card(other, WINDSURF_NAME).get_by_role("button", name="Skip").click()
    expect(note(other, WINDSURF_NAME)).to_have_text("Thanks — your Skip is counted.")
    expect(figure.locator(".detail")).not_to_have_text(before or "", timeout=2000)  # someone else's vote arrived
    assert listener.evaluate("window.liveChanges") == []
    card(listener, WINDSURF_NAME).get_by_role("button", name="Ship").click()  # the listener's own vote
    expect(note(listener, WINDSURF_NAME)).to_have_text("Thanks — your Ship is counted.")
    assert "Thanks — your Ship is counted." in listener.evaluate("window.liveChanges")
    listener.context.close()
    other.context.close()


def test_tap_targets_are_44_px_on_a_phone(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, width=375, height=812, is_mobile=True, has_touch=True)
    buttons = page.locator("[data-shipskip]").get_by_role("button")
    expect(buttons).to_have_count(5)  # Ship and Skip of each tool, and Forget my votes
    for index in range(5):
        box = buttons.nth(index).bounding_box()
        assert box is not None
        assert box["width"] >= 44, box
        assert box["height"] >= 44, box
    page.context.close()
