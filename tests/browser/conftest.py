"""The browser tests' stack: the three services as real processes, another site that embeds the widget, Chromium.

One stack for the whole package (starting it takes seconds): tests that need exact figures vote on a tool no
other test votes on, the others assert what changes.
"""

import asyncio
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from infra.stack.processes import ServiceProcess
from infra.stack.servers import ServerAddresses
from tests.browser.host_site import HostSite
from tests.browser.support import CHROMIUM
from tests.support import Pipeline, flush_redis, reset_servers, service_env, start_votes_service


@pytest.fixture(scope="package")
def host() -> Iterator[HostSite]:
    """A site whose origin the votes API allows (SHIPSKIP_CORS_ORIGINS)."""
    site = HostSite()
    yield site
    site.close()


@pytest.fixture(scope="package")
def stranger() -> Iterator[HostSite]:
    """A site whose origin the votes API does not allow."""
    site = HostSite()
    yield site
    site.close()


@pytest.fixture(scope="package")
def site(servers: ServerAddresses, host: HostSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    asyncio.run(reset_servers(servers))
    asyncio.run(flush_redis(servers))  # rate-limit state of an earlier run on the same servers
    # One ballot is enough to show a share, so a single click shows a percentage; a voter may vote 4 times.
    # The token limit is the default one. 127.0.0.1 is a trusted proxy: a test may put several visitors
    # behind one address with X-Forwarded-For, as a site's reverse proxy would.
    env = service_env(
        servers,
        SHIPSKIP_MIN_BALLOTS="1",
        SHIPSKIP_RATE_LIMITS="on",
        SHIPSKIP_LIMIT_VOTES_PER_VOTER="4/1h,4",
        SHIPSKIP_CORS_ORIGINS=host.origin,
        SHIPSKIP_TRUSTED_PROXIES="127.0.0.1",
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


@pytest.fixture(scope="package")
def stingy(
    site: Pipeline, host: HostSite, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """Another votes API copy that gives one voter token an hour per address (its limit state is its own)."""
    process = start_votes_service(
        servers,
        tmp_path_factory.mktemp("stingy-votes"),
        SHIPSKIP_RATE_LIMITS="on",
        SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS="1/1h,1",
        SHIPSKIP_CORS_ORIGINS=host.origin,
    )
    yield process
    process.stop()


@pytest.fixture(scope="package")
def browser(site: Pipeline) -> Iterator[Browser]:
    # After ``site``: its set-up uses asyncio.run, which cannot run inside Playwright's sync loop.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield chromium
        chromium.close()
