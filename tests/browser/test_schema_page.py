"""The browsable API page (``/schema``) renders in a real browser with no network beyond the service.

Chromium (Debian's, driven by Playwright) gets a context in which every request to a host other than 127.0.0.1 is
aborted and recorded, as on a machine without internet access: the page must still show the operations, and must
not even have tried to reach anywhere else.
"""

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Route, expect, sync_playwright

from infra.stack.servers import ServerAddresses
from tests.support import Pipeline, reset_servers, service_env

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it with apt)"
)


@pytest.fixture(scope="module")
def services(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    asyncio.run(reset_servers(servers))
    pipeline = Pipeline(servers, service_env(servers), tmp_path_factory.mktemp("schema-page-logs"))
    try:
        pipeline.start("read")
        pipeline.start("votes")
        yield pipeline
    finally:
        pipeline.stop()


@pytest.fixture(scope="module")
def browser(services: Pipeline) -> Iterator[Browser]:
    # After ``services``: its set-up uses asyncio.run, which cannot run inside Playwright's sync loop.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()


@pytest.mark.parametrize(
    ("service", "operation"),
    [
        ("votes", "/v1/comparisons/{comparison_id}/votes"),
        ("read", "/v1/comparisons/{comparison_id}/community"),
    ],
)
def test_the_page_renders_with_no_network_beyond_the_service(
    browser: Browser, services: Pipeline, service: str, operation: str
) -> None:
    elsewhere: list[str] = []

    def only_the_service(route: Route) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.hostname != "127.0.0.1":
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.route("**/*", only_the_service)
    page = context.new_page()
    page.goto((services.votes_url if service == "votes" else services.read_url) + "/schema")
    title = "shipskip votes" if service == "votes" else "shipskip tally"
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(title)
    expect(page.locator(".opblock-summary-path", has_text=operation).first).to_be_visible()
    expect(page.get_by_text(operation, exact=True).first).to_be_visible()
    assert elsewhere == []
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"schema-{service}.png"))
    context.close()
