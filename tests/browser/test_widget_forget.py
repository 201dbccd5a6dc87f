"""'Forget my votes' in a real browser: with the keyboard alone, asked first, and what it says on each outcome."""

import re

from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser.host_site import HostSite, embed_page
from tests.browser.support import SMOL, WINDSURF_NAME, card, community, needs_chromium, new_context, note, open_page
from tests.support import Pipeline

pytestmark = needs_chromium

FORGET = "Forget my votes"


def focused(locator: Locator) -> bool:
    """Whether the element has the focus (inside the widget's shadow root)."""
    return bool(locator.evaluate("e => e.getRootNode().activeElement === e"))


def tab_to(page: Page, target: Locator, presses: int = 40) -> None:
    for _ in range(presses):
        page.keyboard.press("Tab")
        if focused(target):
            return
    raise AssertionError("the element cannot be reached with Tab")


def says_votes(n: int) -> re.Pattern[str]:
    """The figure's detail for ``n`` votes (the stack shows a share from one ballot on)."""
    return re.compile(rf"^(Not enough votes yet \({n} of 1\)|{n} votes?)$")


def votes_shown(figure: Locator) -> int:
    text = figure.locator(".detail").text_content() or ""
    return int(re.findall(r"\d+", text)[0])


def test_forget_my_votes_with_the_keyboard_alone(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, SMOL)
    figure = community(page, WINDSURF_NAME)
    expect(figure.locator(".detail")).to_have_text(re.compile(r"\d"))  # the figures are in
    found = votes_shown(figure)  # read before voting: once the vote is in, the page may not show it yet
    counted = found + 1
    ship = card(page, WINDSURF_NAME).get_by_role("button", name="Ship")
    tab_to(page, ship)
    page.keyboard.press("Enter")
    expect(note(page, WINDSURF_NAME)).to_have_text("Thanks — your Ship is counted.")
    expect(figure.locator(".detail")).to_have_text(says_votes(counted), timeout=3000)
    assert page.evaluate("Object.keys(localStorage).some(k => k.startsWith('shipskip.voter@'))")

    link = page.get_by_role("button", name=FORGET, exact=True)
    question = page.get_by_role("group", name=re.compile(r"^Forget every vote from this browser\?"))
    cancel = page.get_by_role("button", name="Cancel", exact=True)
    yes = page.get_by_role("button", name="Yes, forget them", exact=True)
    expect(question).to_be_hidden()
    tab_to(page, link)
    expect(link).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")
    expect(question).to_be_visible()
    expect(link).to_have_attribute("aria-expanded", "true")
    assert focused(cancel), "the question opens on its safe answer"
    page.keyboard.press("Escape")  # changed their mind: nothing is sent, and the focus is back on the link
    expect(question).to_be_hidden()
    assert focused(link)
    expect(ship).to_have_attribute("aria-pressed", "true")

    page.keyboard.press("Enter")
    expect(question).to_be_visible()
    page.keyboard.press("Shift+Tab")
    assert focused(yes)
    page.keyboard.press("Enter")
    status = page.locator("[data-shipskip][data-part=forget]").get_by_role("status")
    expect(status).to_have_text("Your votes are forgotten: they no longer count.")
    expect(question).to_be_hidden()
    assert focused(link), "the answer leaves the focus where the visitor began"
    expect(ship).to_have_attribute("aria-pressed", "false")  # the page no longer shows a vote that does not count
    expect(figure.locator(".detail")).to_have_text(says_votes(counted - 1), timeout=3000)  # live, for everyone
    assert not page.evaluate("Object.keys(localStorage).some(k => k.startsWith('shipskip.'))"), "nothing kept"

    # Voting again is voting as a new voter: a new token, counted.
    tab_to(page, ship)
    page.keyboard.press("Enter")
    expect(note(page, WINDSURF_NAME)).to_have_text("Thanks — your Ship is counted.")
    expect(figure.locator(".detail")).to_have_text(says_votes(counted), timeout=3000)
    page.keyboard.press("Enter")  # and taken back: the figures are as this test found them, for the tests after it
    expect(note(page, WINDSURF_NAME)).to_have_text("Your vote was taken back.")
    expect(figure.locator(".detail")).to_have_text(says_votes(counted - 1), timeout=3000)
    page.context.close()


def test_the_link_and_its_answers_are_44_px_targets(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, SMOL, width=375, height=812, is_mobile=True, has_touch=True)
    page.get_by_role("button", name=FORGET, exact=True).tap()
    for name in (FORGET, "Yes, forget them", "Cancel"):
        box = page.get_by_role("button", name=name, exact=True).bounding_box()
        assert box is not None
        assert box["width"] >= 44, (name, box)
        assert box["height"] >= 44, (name, box)
    page.context.close()


def test_a_browser_that_never_voted_is_told_there_is_nothing_to_forget_in_its_language(
    browser: Browser, site: Pipeline, host: HostSite
) -> None:
    url = host.page("/forget-de", embed_page(f"{site.votes_url}/widget.js", [{"part": "forget"}], lang="de"))
    page = new_context(browser).new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(url)
    page.get_by_role("button", name="Meine Stimmen vergessen", exact=True).click()
    page.get_by_role("button", name="Ja, vergessen", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(
        "Dieser Browser hat hier keine Stimmen, die vergessen werden könnten."
    )
    # Not a fault of the site: nothing for its owner in the console (the browser itself notes the 401).
    assert [m for m in console if "shipskip" in m] == [], console
    page.context.close()
