"""Themes, colours and languages as a site owner sets them, and the docs' pictures, in a real browser."""

import struct
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.demo_screenshots import SHOTS, take_screenshots
from tests.browser.host_site import HostSite, embed_page
from tests.browser.support import SMOL, SMOL_NAME, SMOL_TOOL, needs_chromium, new_context
from tests.support import Pipeline

pytestmark = needs_chromium

BUTTON_BACKGROUND = "el => getComputedStyle(el.shadowRoot.querySelector('button.ship')).backgroundColor"


def host_page(browser: Browser, url: str, color_scheme: str = "light") -> Page:
    page = new_context(browser, color_scheme=color_scheme).new_page()
    page.goto(url)
    return page


def place(site: Pipeline, **attributes: str) -> dict[str, str]:
    return {
        "comparison": SMOL,
        "tool": SMOL_TOOL,
        "tool-name": SMOL_NAME,
        "votes-api": site.votes_url,
        "read-api": site.read_url,
        **attributes,
    }


def test_themes_follow_the_attribute_and_the_colour_scheme(browser: Browser, site: Pipeline, host: HostSite) -> None:
    places = [place(site, theme=theme, part="vote", id=theme) for theme in ("light", "dark", "auto")]
    places.append(place(site, theme="light", part="vote", id="custom"))
    style = "#custom { --shipskip-button-bg: rgb(1, 2, 3); }"  # the host page's own colour, through the shadow root
    url = host.page("/themes", embed_page(f"{site.votes_url}/widget.js", places, style=style))
    light, dark = "rgb(255, 255, 255)", "rgb(36, 35, 31)"
    for scheme, auto in (("dark", dark), ("light", light)):
        page = host_page(browser, url, scheme)
        expect(page.get_by_role("button", name="Ship")).to_have_count(4)
        colours = {theme: page.locator(f"#{theme}").evaluate(BUTTON_BACKGROUND) for theme in ("light", "dark", "auto")}
        assert colours == {"light": light, "dark": dark, "auto": auto}, (scheme, colours)
        assert page.locator("#custom").evaluate(BUTTON_BACKGROUND) == "rgb(1, 2, 3)"
        page.context.close()


def test_the_words_follow_data_lang_then_the_page_language(browser: Browser, site: Pipeline, host: HostSite) -> None:
    widget = f"{site.votes_url}/widget.js"
    german = host.page("/de", embed_page(widget, [place(site, id="page"), place(site, id="en", lang="en")], lang="de"))
    page = host_page(browser, german)
    expect(page.locator("#page").get_by_role("button", name=f"Einsetzen {SMOL_NAME}", exact=True)).to_be_visible()
    expect(page.locator("#page").get_by_role("group", name=f"Ihr Urteil zu {SMOL_NAME}")).to_be_visible()
    expect(page.locator("#page .detail")).to_have_text("Noch zu wenige Stimmen (0 von 1)")
    expect(page.locator("#en").get_by_role("button", name=f"Ship {SMOL_NAME}", exact=True)).to_be_visible()
    expect(page.locator("#en .detail")).to_have_text("Not enough votes yet (0 of 1)")
    page.context.close()

    regional = host.page("/de-at", embed_page(widget, [place(site, lang="de-AT")], lang="en"))
    page = host_page(browser, regional)
    expect(page.get_by_role("button", name=f"Auslassen {SMOL_NAME}", exact=True)).to_be_visible()
    page.context.close()

    unknown = host.page("/pt", embed_page(widget, [place(site)], lang="pt-BR"))  # no Portuguese: English
    page = host_page(browser, unknown)
    expect(page.get_by_role("button", name=f"Skip {SMOL_NAME}", exact=True)).to_be_visible()
    page.context.close()


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_docs_pictures_can_be_taken(browser: Browser, site: Pipeline, tmp_path: Path) -> None:
    written = take_screenshots(browser, site.votes_url, tmp_path)
    assert [path.name for path in written] == [shot.file for shot in SHOTS]
    assert [png_size(path) for path in written] == [(shot.width, shot.height) for shot in SHOTS]
