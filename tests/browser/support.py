"""What the browser tests share: Chromium, the demo catalogue's names, and finding the widget's parts on a page."""

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page

from tests.support import Pipeline

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
LLAMA_TOOL, LLAMA_NAME = "llama-4-scout-fine-tuning-toolkit", "Llama 4 Scout Fine-Tuning Toolkit"
WINDSURF_TOOL, WINDSURF_NAME = "windsurf-swe-1", "Windsurf SWE-1 Family"
SMOL_TOOL, SMOL_NAME = "smolvlm2-2b", "SmolVLM2-2B"

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it with apt)"
)


def new_context(browser: Browser, width: int = 1100, height: int = 900, **options: object) -> BrowserContext:
    """A new visitor: a browser profile of its own (no token, no stored choice)."""
    return browser.new_context(viewport={"width": width, "height": height}, **options)  # type: ignore[arg-type]


def open_page(browser: Browser, site: Pipeline, comparison: str = LLAMA, **options: object) -> Page:
    page = new_context(browser, **options).new_page()  # type: ignore[arg-type]
    page.goto(f"{site.votes_url}/compare/{comparison}")
    return page


def card(page: Page, name: str) -> Locator:
    return page.locator("section.card").filter(has_text=name)


def community(page: Page, name: str) -> Locator:
    """The Community figure of a tool's card (the widget's figure part)."""
    return card(page, name).locator("[data-shipskip][data-part=figure]")


def note(page: Page, name: str) -> Locator:
    """The line that says what became of the visitor's own vote."""
    return card(page, name).get_by_role("status")
