"""What the widget says when a vote does not go through, and what it does about it, in a real browser.

The refusals come from the real votes API (its rate limits, its CORS allow-list, its token check); only the
5xx answers are made up by routing a request in the browser, because the stack cannot be made to give them on
cue (an ack timeout, a dependency outage).
"""

import json
import re
import time

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, expect

from infra.stack.processes import ServiceProcess
from tests.browser.host_site import HostSite, embed_page
from tests.browser.support import (
    SMOL,
    SMOL_NAME,
    SMOL_TOOL,
    WINDSURF_NAME,
    WINDSURF_TOOL,
    card,
    needs_chromium,
    new_context,
    note,
    open_page,
)
from tests.support import Pipeline

pytestmark = needs_chromium

VOTES = "**/v1/comparisons/*/votes"


def console_of(page: Page) -> list[str]:
    messages: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        messages.append(message.text)

    page.on("console", keep)
    return messages


def vote_requests(page: Page) -> list[Request]:
    requests: list[Request] = []

    def keep(request: Request) -> None:
        if "/votes" in request.url and request.method in ("POST", "DELETE"):
            requests.append(request)

    page.on("request", keep)
    return requests


def test_a_site_whose_origin_is_not_allowed_is_told_what_to_change(
    browser: Browser, site: Pipeline, stranger: HostSite
) -> None:
    place = {"comparison": SMOL, "tool": SMOL_TOOL, "tool-name": SMOL_NAME, "read-api": site.read_url}
    url = stranger.page("/review", embed_page(f"{site.votes_url}/widget.js", [place]))  # no data-votes-api
    page = new_context(browser).new_page()
    console = console_of(page)
    page.goto(url)
    ship = page.get_by_role("button", name="Ship")
    ship.click()
    expect(page.get_by_role("status")).to_have_text("Voting is not available on this site right now.")
    expect(ship).to_have_attribute("aria-pressed", "false")
    told = [m for m in console if "SHIPSKIP_CORS_ORIGINS" in m]
    assert told, console
    assert f"does not allow pages of {stranger.origin}" in told[0]
    assert site.votes_url in told[0]  # the API it found by itself: the script's origin
    page.context.close()


def test_too_many_new_voters_from_one_network_are_told_when_to_come_back(
    browser: Browser, site: Pipeline, host: HostSite, stingy: ServiceProcess
) -> None:
    """A votes API that gives one new voter an hour per address; the page is on another origin (CORS)."""
    place = {"comparison": SMOL, "tool": WINDSURF_TOOL, "read-api": site.read_url}
    url = host.page("/stingy", embed_page(f"{stingy.url}/widget.js", [place]))
    first = new_context(browser).new_page()
    first.goto(url)
    first.get_by_role("button", name="Ship").click()
    expect(first.get_by_role("status")).to_have_text("Thanks — your Ship is counted.")

    second = new_context(browser).new_page()  # another visitor behind the same address
    console = console_of(second)
    second.goto(url)
    ship = second.get_by_role("button", name="Ship")
    ship.click()
    # Retry-After (an hour) read across origins: the API's CORS exposes it.
    expect(second.get_by_role("status")).to_have_text(
        re.compile(r"^Too many new voters from your network — try again in (59|60) min\.$")
    )
    expect(ship).to_have_attribute("aria-pressed", "false")
    # What the widget read, a page of this origin can read: the API's CORS exposes the rate-limit fields.
    exposed = second.evaluate(
        """async api => {
            const answer = await fetch(api + '/v1/voters', {method: 'POST', credentials: 'include'});
            return [answer.status, answer.headers.get('Retry-After'), answer.headers.get('RateLimit-Policy')];
        }""",
        stingy.url,
    )
    assert exposed[0] == 429
    assert 3500 < int(exposed[1]) <= 3600
    assert exposed[2] == '"voter-tokens";q=1;w=3600'
    told = [m for m in console if "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS" in m]
    assert told, console
    assert "1 per 3600 s" in told[0]
    first.context.close()
    second.context.close()


def test_a_class_behind_one_address_can_all_vote_with_the_default_limit(browser: Browser, site: Pipeline) -> None:
    """Eight new visitors behind one address (the site's proxy says so in X-Forwarded-For) all get to vote."""
    classroom = "203.0.113.30"
    started = time.monotonic()
    for _ in range(8):
        page = new_context(browser).new_page()

        def through_proxy(route: Route) -> None:
            route.continue_(headers={**route.request.headers, "x-forwarded-for": classroom})

        page.route(f"{site.votes_url}/v1/**", through_proxy)
        page.goto(f"{site.votes_url}/compare/{SMOL}")
        card(page, WINDSURF_NAME).get_by_role("button", name="Ship").click()
        expect(note(page, WINDSURF_NAME)).to_have_text("Thanks — your Ship is counted.")
        page.context.close()
    # The default allows a burst of 100 new voters per address, then one every 12 s.
    with httpx.Client(timeout=10.0) as client:
        issued = 8
        while issued < 200:
            answer = client.post(f"{site.votes_url}/v1/voters", headers={"X-Forwarded-For": classroom})
            if answer.status_code != 201:
                break
            issued += 1
        assert answer.status_code == 429, answer.text
        assert answer.headers["RateLimit-Policy"] == '"voter-tokens";q=300;w=3600'
    refilled = int((time.monotonic() - started) / 12) + 1
    assert 100 <= issued <= 100 + refilled, issued


def test_a_refused_token_is_replaced_once_without_the_visitor_noticing(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, SMOL)
    page.evaluate("localStorage.setItem('shipskip.voter@', 'bm90LWEtdG9rZW4.c2lnbmVkLWJ5LW5vYm9keQ')")  # forged
    requests = vote_requests(page)
    issued: list[Request] = []
    page.on("request", lambda request: issued.append(request) if request.url.endswith("/v1/voters") else None)
    card(page, WINDSURF_NAME).get_by_role("button", name="Skip").click()
    expect(note(page, WINDSURF_NAME)).to_have_text("Thanks — your Skip is counted.")
    assert len(issued) == 1
    assert len(requests) == 2
    first, second = (r.response() for r in requests)
    assert first is not None
    assert first.status == 401
    assert second is not None
    assert second.status == 202
    assert requests[0].headers["idempotency-key"] == requests[1].headers["idempotency-key"]
    assert page.evaluate("localStorage.getItem('shipskip.voter@')") == issued[0].response().json()["voter_token"]  # type: ignore[union-attr]
    page.context.close()


def test_an_unknown_outcome_is_retried_with_the_same_idempotency_key(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, SMOL)
    keys: list[str | None] = []

    def outcome_unknown_once(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) > 1:
            route.continue_()
            return
        body = {"error": "vote_outcome_unknown", "detail": "the stream did not acknowledge in time", "retry_after": 1}
        route.fulfill(status=504, headers={"Retry-After": "1"}, content_type="application/json", body=json.dumps(body))

    page.route(VOTES, outcome_unknown_once)
    ship = card(page, WINDSURF_NAME).get_by_role("button", name="Ship")
    ship.click()
    status = note(page, WINDSURF_NAME)
    expect(status).to_have_text("Not confirmed yet — trying again in 1 s…")
    expect(ship).to_have_attribute("aria-pressed", "true")
    expect(ship).to_have_attribute("aria-disabled", "true")  # no second vote while this one is in doubt
    expect(status).to_have_text("Thanks — your Ship is counted.", timeout=5000)
    expect(ship).to_have_attribute("aria-disabled", "false")
    assert len(keys) == 2
    assert keys[0]
    assert keys[0] == keys[1]
    page.context.close()


def test_an_api_in_trouble_is_told_apart_from_a_refusal(browser: Browser, site: Pipeline) -> None:
    """A 503 (not stored) asking for two minutes: not waited out, but said, and the button goes back."""
    page = open_page(browser, site, SMOL)
    requests = vote_requests(page)

    def unavailable(route: Route) -> None:
        body = {"error": "stream_unavailable", "detail": "the vote could not be stored", "retry_after": 120}
        route.fulfill(
            status=503, headers={"Retry-After": "120"}, content_type="application/json", body=json.dumps(body)
        )

    page.route(VOTES, unavailable)
    ship = card(page, WINDSURF_NAME).get_by_role("button", name="Ship")
    ship.click()
    expect(note(page, WINDSURF_NAME)).to_have_text(
        "The vote service is having trouble: your vote was not counted. Try again in 2 min."
    )
    expect(ship).to_have_attribute("aria-pressed", "false")
    assert len(requests) == 1
    page.context.close()


def test_a_vote_made_offline_is_sent_when_the_visitor_is_back(browser: Browser, site: Pipeline) -> None:
    page = open_page(browser, site, SMOL)
    expect(card(page, WINDSURF_NAME).get_by_role("button", name="Ship")).to_be_visible()
    page.context.set_offline(True)
    ship = card(page, WINDSURF_NAME).get_by_role("button", name="Ship")
    ship.click()
    status = note(page, WINDSURF_NAME)
    expect(status).to_have_text("You are offline — your vote will be sent when you are back online.")
    expect(ship).to_have_attribute("aria-pressed", "true")
    page.context.set_offline(False)
    expect(status).to_have_text("Thanks — your Ship is counted.", timeout=5000)
    page.context.close()


def test_a_page_whose_storage_is_blocked_keeps_one_voter(browser: Browser, site: Pipeline) -> None:
    """Storage blocked (a privacy setting): the page still votes as one voter, not a new one per click."""
    context = new_context(browser)
    context.add_init_script(
        "for (const name of ['getItem', 'setItem', 'removeItem']) Storage.prototype[name] = "
        "() => { throw new DOMException('blocked', 'SecurityError'); };"
    )
    page = context.new_page()
    issued: list[Request] = []
    page.on("request", lambda request: issued.append(request) if request.url.endswith("/v1/voters") else None)
    page.goto(f"{site.votes_url}/compare/{SMOL}")
    windsurf = card(page, WINDSURF_NAME)
    for verdict in ("Ship", "Skip"):
        windsurf.get_by_role("button", name=verdict).click()
        expect(note(page, WINDSURF_NAME)).to_have_text(f"Thanks — your {verdict} is counted.")
    assert len(issued) == 1
    context.close()
