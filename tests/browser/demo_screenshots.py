"""Pictures of the demo comparison page for the docs, taken from a real running stack with some votes in it.

    .venv/bin/python -m tests.browser.demo_screenshots [OUT_DIR]      (default: docs/images)

Starts the embedded NATS, Postgres and Redis on free ports and the three services, casts votes through the votes
API as separate voters (one tool with enough ballots for a share, the other not yet), and has Debian's Chromium
take the page at 1280 px, at 375 px (a phone), in the dark theme, and at its foot with "Forget my votes" asked,
one viewport high each so the files stay small (and a quarter of that where Debian's pngquant is installed: 256
colours are plenty for a flat page).
``take_screenshots`` alone is also run by the browser tests, against their stack, so this cannot rot.
"""

import asyncio
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect, sync_playwright

from infra.stack.servers import EmbeddedServers
from tests.browser.support import CHROMIUM, LLAMA, LLAMA_TOOL, WINDSURF_TOOL
from tests.support import Pipeline, new_voter, reset_servers, send_vote, service_env

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@dataclass(frozen=True)
class Shot:
    file: str
    width: int
    height: int
    theme: str
    vote: bool = False
    """Click Ship on the first card first: the picture shows a chosen button and its confirmation."""
    forget: bool = False
    """Open "Forget my votes" in the page's footer: the picture shows its confirmation."""


SHOTS = (
    Shot("demo-desktop.png", 1280, 900, "light"),
    Shot("demo-mobile.png", 375, 812, "light"),
    Shot("demo-dark.png", 1280, 900, "dark", vote=True),
    Shot("demo-forget.png", 1280, 900, "light", forget=True),
)

# (ship, skip) ballots per tool: Llama past the minimum of 10 (a share shows), Windsurf not yet.
VOTES = {LLAMA_TOOL: (17, 6), WINDSURF_TOOL: (5, 2)}


def cast_demo_votes(votes_url: str) -> None:
    with httpx.Client(timeout=10.0) as client:
        for tool, (ship, skip) in VOTES.items():
            for verdict in ["ship"] * ship + ["skip"] * skip:
                response = send_vote(client, votes_url, new_voter(client, votes_url), verdict, LLAMA, tool)
                assert response.status_code == 202, response.text


def take_screenshots(browser: Browser, votes_url: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shot in SHOTS:
        context = browser.new_context(
            viewport={"width": shot.width, "height": shot.height},
            color_scheme="dark" if shot.theme == "dark" else "light",
        )
        page = context.new_page()
        page.goto(f"{votes_url}/compare/{LLAMA}")
        # Wait for the live figures (the value turns from "—" once the read API has answered).
        expect(page.locator("[data-shipskip][data-part=figure] .detail").first).not_to_have_text("")
        if shot.vote:
            page.get_by_role("button", name="Ship").first.click()
            expect(page.get_by_role("status").first).to_have_text("Thanks — your Ship is counted.")
        if shot.forget:
            page.get_by_role("button", name="Forget my votes").click()
            expect(page.get_by_role("button", name="Yes, forget them")).to_be_visible()
            page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        path = out_dir / shot.file
        page.screenshot(path=str(path))
        context.close()
        written.append(path)
    return written


def shrink(path: Path) -> None:
    pngquant = shutil.which("pngquant")
    if pngquant:
        subprocess.run([pngquant, "--force", "--skip-if-larger", "--output", str(path), str(path)], check=False)


def main(out_dir: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="shipskip-screenshots-"))
    with EmbeddedServers(data_dir) as servers:
        addresses = servers.addresses
        asyncio.run(reset_servers(addresses))
        pipeline = Pipeline(addresses, service_env(addresses), data_dir / "service-logs")
        try:
            pipeline.start("projector")
            pipeline.start("read")
            pipeline.env["SHIPSKIP_PUBLIC_READ_API"] = pipeline.read_url
            pipeline.start("votes")
            cast_demo_votes(pipeline.votes_url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
                for path in take_screenshots(browser, pipeline.votes_url, out_dir):
                    shrink(path)
                    print(f"{path} ({path.stat().st_size // 1024} KiB)")
                browser.close()
        finally:
            pipeline.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DOCS_IMAGES)
