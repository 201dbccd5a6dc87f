"""The documentation holds together: the README stays a front page, every link between the pages (and to files of
the repository) resolves, heading anchors included, nothing points outside the repository, and the page
``make bench`` rewrites has the markers it rewrites between."""

import re
import subprocess
from pathlib import Path

import pytest

from bench.report import BEGIN, END
from bench.soak_report import SOAK_BEGIN, SOAK_END

ROOT = Path(__file__).parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if line.startswith("#"):
            base = slug(line.lstrip("#"))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def test_the_readme_is_a_front_page() -> None:
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme) <= 16_000, f"README.md is {len(readme)} bytes: move detail into docs/"
    head = "\n".join(readme.decode().splitlines()[:40])
    assert "make run" in head
    assert "make test" in head
    for page in ("docs/design.md", "docs/api.md", "docs/operations.md", "docs/performance.md"):
        assert f"]({page})" in readme.decode(), f"README.md does not link {page}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked here
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        missing = not file.exists() or not file.is_relative_to(ROOT)
        if missing or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links that lead nowhere: {broken}"


def test_the_slug_rule() -> None:
    assert slug('"dead letters 2" in `shipskip status`') == "dead-letters-2-in-shipskip-status"
    assert slug("The soak (bench/soak.py)") == "the-soak-benchsoakpy"
    assert slug("How do I find a voter's id to void them?") == "how-do-i-find-a-voters-id-to-void-them"


def test_nothing_points_outside_the_repository() -> None:
    outside = ".." + "/shared"  # spelled apart, so that this file does not find itself
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = [name for name in files if (ROOT / name).is_file() and outside in (ROOT / name).read_text(errors="replace")]
    assert not found, f"files that point outside the repository ({outside}): {found}"


def test_make_bench_writes_into_a_page_with_its_markers() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"--doc (\S+)", makefile))
    assert targets == {"docs/performance.md"}
    text = (ROOT / "docs" / "performance.md").read_text()
    for begin, end in ((BEGIN, END), (SOAK_BEGIN, SOAK_END)):
        assert text.count(begin) == 1
        assert text.count(end) == 1
        assert text.index(begin) < text.index(end)
