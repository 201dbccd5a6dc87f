"""A catalogue at a real site's scale, through the CLI and the three services as real processes: larger than NATS's
max payload, loaded and served; a one-tool change picked up live; --check; paging while the catalogue changes."""

import asyncio
from collections import Counter
from functools import partial
from pathlib import Path

import httpx
import msgspec
import nats

from bench.synthetic_catalog import comparison_id, synthetic_catalog, tool_id
from contracts.catalog import Catalog, Comparison, encode_catalog
from infra.stack.servers import ServerAddresses, free_port
from services.shared.catalog_store import write_catalog
from tests.support import Pipeline, new_voter, projected_position, run_cli, stream_last_seq, wait_until

BIG = synthetic_catalog(1_003, 3_002)
"""Tools with their summary and two quotes each, as on the seed pages: about 3.3 MB of JSON."""


def catalogue_file(folder: Path, catalog: Catalog, name: str = "catalog.json") -> Path:
    path = folder / name
    path.write_bytes(encode_catalog(catalog))
    return path


def all_pages(client: httpx.Client, read_url: str, query: str = "", limit: int = 500) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    cursor = None
    while True:
        params = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "") + (f"&{query}" if query else "")
        page = client.get(f"{read_url}/v1/comparisons?{params}")
        assert page.status_code == 200, page.text
        body = page.json()
        entries += body["comparisons"]
        cursor = body["next_cursor"]
        if cursor is None:
            return entries


def load(pipeline: Pipeline, path: Path, *args: str) -> str:
    loaded = run_cli(pipeline.env, "catalog", "load", *args, str(path))
    assert loaded.returncode == 0, loaded.stderr
    assert "Traceback" not in loaded.stderr
    return loaded.stdout


def test_a_catalogue_beyond_the_max_payload_loads_and_every_service_serves_it(
    pipeline: Pipeline, servers: ServerAddresses, tmp_path: Path, client: httpx.Client
) -> None:
    path = catalogue_file(tmp_path, BIG)

    async def max_payload() -> int:
        nc = await nats.connect(servers.nats_url)
        try:
            return nc.max_payload
        finally:
            await nc.close()

    assert path.stat().st_size > 3 * asyncio.run(max_payload())
    out = load(pipeline, path)
    assert "3002 comparisons, 1003 tools" in out, out
    assert "tools +1003 ~0 -3, comparisons +3002 ~0 -2" in out, out  # the demo's replaced

    last = BIG.comparisons[-1]
    wait_until(lambda: client.get(f"{pipeline.read_url}/v1/comparisons/{last.id}/community").status_code == 200)
    # The votes API takes votes on it, the projector folds them, the read API counts them.
    token = new_voter(client, pipeline.votes_url)
    url = f"{pipeline.votes_url}/v1/comparisons/{last.id}/votes"
    wait_until(lambda: client.post(url, json={"tool_id": last.tools[1], "verdict": "ship"},
                                   headers={"X-Voter-Token": token}).status_code == 202)  # fmt: skip
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) >= head)
    wait_until(
        lambda: client.get(f"{pipeline.read_url}/v1/comparisons/{last.id}/community").json()["tools"][1]["ship"] == 1
    )
    assert client.get(f"{pipeline.votes_url}/compare/{last.id}").status_code == 200

    listed = all_pages(client, pipeline.read_url)
    assert [entry["id"] for entry in listed] == sorted(c.id for c in BIG.comparisons)
    tool = BIG.tools[7]
    page = client.get(f"{pipeline.read_url}/v1/tools/{tool.id}").json()
    assert page["tool"]["summary"] == tool.summary
    assert [q["text"] for q in page["tool"]["quotes"]] == [q.text for q in tool.quotes]
    mine = sorted(c.id for c in BIG.comparisons if tool.id in c.tools)
    assert page["comparison_count"] == len(mine)
    assert [c["id"] for c in page["comparisons"]] == mine[:50]
    assert [e["id"] for e in all_pages(client, pipeline.read_url, f"tool_id={tool.id}", limit=2)] == mine
    category = tool.category
    in_category = sorted(
        c.id for c in BIG.comparisons if any(BIG.tools[int(t.split("-")[1])].category == category for t in c.tools)
    )
    assert [e["id"] for e in all_pages(client, pipeline.read_url, f"category={category}")] == in_category

    shown = run_cli(pipeline.env, "catalog", "show")
    assert shown.returncode == 0, shown.stderr
    assert msgspec.json.decode(shown.stdout, type=Catalog) == Catalog(
        tools=sorted(BIG.tools, key=lambda t: t.id), comparisons=sorted(BIG.comparisons, key=lambda c: c.id)
    )


def _changed(catalog: Catalog) -> Catalog:
    """One tool's price and panel changed, one comparison added, one removed."""
    tool = catalog.tools[5]
    tools = list(catalog.tools)
    tools[5] = msgspec.structs.replace(
        tool, entry="$20/mo", panel=msgspec.structs.replace(tool.panel, ship=tool.panel.ship + 1)
    )
    added = Comparison(id="cmp-added", title="Added", tools=[tool.id, catalog.tools[6].id])
    return Catalog(tools=tools, comparisons=[*catalog.comparisons[1:], added])


def test_check_shows_the_changes_and_changes_nothing(pipeline: Pipeline, tmp_path: Path, client: httpx.Client) -> None:
    load(pipeline, catalogue_file(tmp_path, BIG))
    before = client.get(f"{pipeline.read_url}/v1/comparisons?limit=1").json()["revision"]
    checked = load(pipeline, catalogue_file(tmp_path, _changed(BIG)), "--check")
    assert "tools +0 ~1 -0, comparisons +1 ~0 -1" in checked
    assert f"tools changed: {BIG.tools[5].id}" in checked
    assert "comparisons added: cmp-added" in checked
    assert f"comparisons removed: {BIG.comparisons[0].id}" in checked
    assert "checked: nothing changed" in checked
    shown = msgspec.json.decode(run_cli(pipeline.env, "catalog", "show").stdout, type=Catalog)
    assert {c.id for c in shown.comparisons} == {c.id for c in BIG.comparisons}
    assert client.get(f"{pipeline.read_url}/v1/comparisons?limit=1").json()["revision"] == before
    assert "unchanged" in load(pipeline, catalogue_file(tmp_path, BIG))


def test_a_one_tool_change_reaches_every_service_without_a_restart(
    pipeline: Pipeline, tmp_path: Path, client: httpx.Client
) -> None:
    load(pipeline, catalogue_file(tmp_path, BIG))
    tool = BIG.tools[5]
    theirs = next(c.id for c in BIG.comparisons[1:] if tool.id in c.tools)
    figures = f"{pipeline.read_url}/v1/comparisons/{theirs}/community"
    held = client.get(figures)  # rendered before the change: the change must re-render it
    side = [t["tool_id"] for t in held.json()["tools"]].index(tool.id)
    assert held.json()["tools"][side]["panel"]["ship"] == tool.panel.ship
    token = new_voter(client, pipeline.votes_url)
    vote = {"tool_id": tool.id, "verdict": "skip"}
    added_votes = f"{pipeline.votes_url}/v1/comparisons/cmp-added/votes"
    assert client.post(added_votes, json=vote, headers={"X-Voter-Token": token}).status_code == 404

    out = load(pipeline, catalogue_file(tmp_path, _changed(BIG)), "--force")
    assert "(3 entries written" in out, out  # the tool, the new comparison, the removal: nothing else

    page = f"{pipeline.read_url}/v1/tools/{tool.id}"
    wait_until(lambda: client.get(page).json()["tool"]["entry"] == "$20/mo")
    wait_until(lambda: client.get(figures).json()["tools"][side]["panel"]["ship"] == tool.panel.ship + 1)
    assert client.get(figures).headers["etag"] != held.headers["etag"]
    listed = client.get(f"{pipeline.read_url}/v1/comparisons?tool_id={tool.id}&limit=500").json()["comparisons"]
    assert {t["entry"] for c in listed for t in c["tools"] if t["id"] == tool.id} == {"$20/mo"}
    assert "cmp-added" in {c["id"] for c in listed}
    wait_until(lambda: client.post(added_votes, json=vote, headers={"X-Voter-Token": token}).status_code == 202)
    assert "$20/mo" in client.get(f"{pipeline.votes_url}/compare/{theirs}").text
    gone = BIG.comparisons[0].id
    assert client.get(f"{pipeline.read_url}/v1/comparisons/{gone}/community").status_code == 404
    assert client.get(f"{pipeline.votes_url}/compare/{gone}").status_code == 404


def test_paging_returns_each_comparison_once_while_the_catalogue_changes(
    pipeline: Pipeline, servers: ServerAddresses, client: httpx.Client
) -> None:
    base = synthetic_catalog(200, 3_000, seed=11)
    # Two catalogues that take turns: each removes some comparisons and adds others, spread over the id order.
    variants = []
    for turn in range(2):
        kept = [c for i, c in enumerate(base.comparisons) if i % 10 != turn * 5]
        extra = [
            Comparison(id=f"{comparison_id(i)}-{turn}", title=f"extra {i}", tools=[tool_id(1), tool_id(2)])
            for i in range(turn, 3_000, 40)
        ]
        variants.append(Catalog(tools=base.tools, comparisons=[*kept, *extra]))
    asyncio.run(_write(servers, variants[1]))
    stable = {c.id for c in variants[0].comparisons} & {c.id for c in variants[1].comparisons}
    seen: list[str] = []
    revisions = []
    cursor = None
    listing = f"{pipeline.read_url}/v1/comparisons"
    while True:
        body = client.get(f"{listing}?limit=150" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [entry["id"] for entry in body["comparisons"]]
        revisions.append(body["revision"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Between every two pages the catalogue changes: the other variant, loaded and taken in by the read API.
        loaded = asyncio.run(_write(servers, variants[(len(revisions) - 1) % 2]))
        wait_until(partial(_at_revision, client, listing, loaded))
    assert len(set(revisions)) == len(revisions) >= 15, revisions
    assert seen == sorted(seen)
    counted = Counter(seen)
    assert [key for key, n in counted.items() if n > 1] == []
    assert stable - counted.keys() == set()


def _at_revision(client: httpx.Client, listing: str, revision: int) -> bool:
    return bool(client.get(f"{listing}?limit=1").json()["revision"] == revision)


async def _write(servers: ServerAddresses, catalog: Catalog) -> int:
    nc = await nats.connect(servers.nats_url)
    try:
        return (await write_catalog(nc.jetstream(), catalog)).revision
    finally:
        await nc.close()


def test_catalogue_routes_check_their_parameters(pipeline: Pipeline, client: httpx.Client) -> None:
    url = f"{pipeline.read_url}/v1/comparisons"
    for query, parameter in [
        ("limit=0", "limit"), ("limit=501", "limit"), ("limit=ten", "limit"), ("limit=-1", "limit"),
        ("limit=1&limit=2", "limit"), ("cursor=nope", "cursor"), ("cursor=" + "A" * 300, "cursor"),
        ("category=" + "x" * 101, "category"), ("category=", "category"),
    ]:  # fmt: skip
        refused = client.get(f"{url}?{query}")
        assert refused.status_code == 422, (query, refused.text)
        assert refused.json()["detail"].startswith(parameter + ":"), refused.text
    unknown = client.get(f"{url}?tool_id=no-such-tool")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "unknown_tool"
    assert client.get(f"{pipeline.read_url}/v1/tools/no-such-tool").status_code == 404
    assert client.get(f"{pipeline.read_url}/v1/tools/{'x' * 5000}").status_code == 404
    assert client.get(f"{url}?category=No such category").json()["comparisons"] == []

    first = client.get(f"{url}?limit=3")
    assert first.status_code == 200
    assert len(first.json()["comparisons"]) == 3
    same = client.get(f"{url}?limit=3", headers={"If-None-Match": first.headers["etag"]})
    assert same.status_code == 304
    assert same.content == b""
    other = client.get(f"{url}?limit=4", headers={"If-None-Match": first.headers["etag"]})
    assert other.status_code == 200
    tool = client.get(f"{pipeline.read_url}/v1/tools/{first.json()['comparisons'][0]['tools'][0]['id']}")
    again = client.get(str(tool.request.url), headers={"If-None-Match": tool.headers["etag"]})
    assert again.status_code == 304


def test_no_catalogue_file_gets_a_traceback(pipeline: Pipeline, tmp_path: Path) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as sparse:
        sparse.truncate(300 * 1024 * 1024)  # a sparse file: refused by its size, never read
    not_json = tmp_path / "not.json"
    not_json.write_bytes(b"\xff\xfe not json")
    cases = {
        str(tmp_path / "missing.json"): "No such file",
        str(tmp_path): "is a folder",
        str(huge): "the largest catalogue taken is 268 MB",
        str(not_json): "invalid catalogue JSON",
    }
    for path, message in cases.items():
        refused = run_cli(pipeline.env, "catalog", "load", path)
        assert refused.returncode == 1, refused
        assert message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
    away = {**pipeline.env, "SHIPSKIP_NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    for args in (("load", str(catalogue_file(tmp_path, BIG))), ("show",)):
        refused = run_cli(away, "catalog", *args)
        assert refused.returncode == 2, refused
        assert "cannot reach NATS" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr, refused.stderr
