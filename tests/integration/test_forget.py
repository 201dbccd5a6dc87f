"""Forget my votes (DELETE /v1/voters/me) end to end through HTTP: the figures drop by exactly that voter's
ballots, the token is refused from then on, the cookie is cleared, and a rebuild and a verify agree."""

import asyncio
import json

import asyncpg
import httpx
import pytest

from contracts.events import VoterForgotten, encode_event
from infra.stack.servers import ServerAddresses, free_port
from services.tally.fold import FORGOTTEN
from tests.support import (
    Pipeline,
    new_voter,
    projected_position,
    read_events,
    run_cli,
    start_votes_service,
    stream_last_seq,
    wait_until,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
TOOLS = {
    LLAMA: ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1"),
    SMOL: ("smolvlm2-2b", "windsurf-swe-1"),
}
Figures = dict[tuple[str, str], tuple[int, int, int, int]]


def settle(servers: ServerAddresses) -> None:
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head, timeout=30)


def shown(client: httpx.Client, read_url: str) -> dict[tuple[str, str], tuple[int, int]]:
    """The figures the read API shows: (ship, skip) per tool."""
    query = "&".join(f"comparison_id={c}" for c in TOOLS)
    body = client.get(f"{read_url}/v1/community?{query}").json()
    return {
        (comparison["comparison_id"], tool["tool_id"]): (tool["ship"], tool["skip"])
        for comparison in body["comparisons"]
        for tool in comparison["tools"]
    }


async def _fetch(servers: ServerAddresses, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(servers.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def figures(servers: ServerAddresses) -> Figures:
    """Every tally row, the uncounted figures included."""
    rows = asyncio.run(_fetch(servers, "select * from tallies"))
    return {
        (r["comparison_id"], r["tool_id"]): (r["ship"], r["skip"], r["uncounted_ship"], r["uncounted_skip"])
        for r in rows
    }


def vote(
    client: httpx.Client, votes_url: str, token: str | None, comparison: str, tool: str, verdict: str
) -> httpx.Response:
    headers = {"X-Voter-Token": token} if token else {}
    return client.post(
        f"{votes_url}/v1/comparisons/{comparison}/votes", json={"tool_id": tool, "verdict": verdict}, headers=headers
    )


def test_forget_takes_out_exactly_that_voters_ballots_and_retires_the_token(
    pipeline: Pipeline, client: httpx.Client, servers: ServerAddresses
) -> None:
    url = pipeline.votes_url
    leaving, staying = new_voter(client, url), new_voter(client, url)
    mine = [(LLAMA, TOOLS[LLAMA][1], "ship"), (SMOL, TOOLS[SMOL][0], "skip"), (SMOL, TOOLS[SMOL][1], "ship")]
    for comparison, tool, verdict in mine:
        assert vote(client, url, leaving, comparison, tool, verdict).status_code == 202
    for comparison, tool, verdict in [(LLAMA, TOOLS[LLAMA][1], "ship"), (SMOL, TOOLS[SMOL][0], "ship")]:
        assert vote(client, url, staying, comparison, tool, verdict).status_code == 202
    # A retraction leaves a ballot row without a verdict: forgetting it must change nothing either.
    assert (
        client.delete(
            f"{url}/v1/comparisons/{SMOL}/votes/{TOOLS[SMOL][1]}", headers={"X-Voter-Token": leaving}
        ).status_code
        == 202
    )
    mine = mine[:2]
    settle(servers)
    before_shown, before = shown(client, pipeline.read_url), figures(servers)
    head = asyncio.run(stream_last_seq(servers))

    answer = client.delete(f"{url}/v1/voters/me", headers={"X-Voter-Token": leaving})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "forgotten"
    assert answer.headers["set-cookie"].startswith('shipskip_voter=""; ') or answer.headers["set-cookie"].startswith(
        "shipskip_voter=; "
    )
    assert "Max-Age=0" in answer.headers["set-cookie"]

    # The token votes no more, at once (the marker is written before the 202), and neither retracts.
    refused = vote(client, url, leaving, LLAMA, TOOLS[LLAMA][0], "ship")
    assert (refused.status_code, refused.json()["error"]) == (401, "voter_forgotten"), refused.text
    retract = client.delete(f"{url}/v1/comparisons/{LLAMA}/votes/{TOOLS[LLAMA][1]}", headers={"X-Voter-Token": leaving})
    assert (retract.status_code, retract.json()["error"]) == (401, "voter_forgotten")
    # The event holds the voter's keyed hash and nothing else about them; nothing else was stored.
    events = asyncio.run(read_events(servers, head + 1))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, VoterForgotten)
    assert event.event_id == body["event_id"]
    assert leaving not in encode_event(event).decode()
    assert set(json.loads(encode_event(event))) == {"type", "event_id", "voter_id", "at"}

    settle(servers)
    expected = dict(before_shown)
    for comparison, tool, verdict in mine:
        ship, skip = expected[(comparison, tool)]
        expected[(comparison, tool)] = (ship - 1, skip) if verdict == "ship" else (ship, skip - 1)
    assert shown(client, pipeline.read_url) == expected
    after = figures(servers)
    assert {key: counts[2:] for key, counts in after.items()} == {key: counts[2:] for key, counts in before.items()}, (
        "nothing moved to the uncounted figures: the ballots left them all"
    )
    ballots = asyncio.run(_fetch(servers, "select verdict, counted from ballots where voter_id = $1", event.voter_id))
    assert len(ballots) == 3
    assert all(row["verdict"] is None for row in ballots), "no verdict of a forgotten voter is kept"
    voided = asyncio.run(_fetch(servers, "select reason from voided_voters where voter_id = $1", event.voter_id))
    assert [row["reason"] for row in voided] == [FORGOTTEN]

    # Idempotent: a second forget is 202 and changes nothing.
    again = client.delete(f"{url}/v1/voters/me", headers={"X-Voter-Token": leaving})
    assert again.status_code == 202, again.text
    assert again.json()["event_id"] != body["event_id"]
    settle(servers)
    assert figures(servers) == after

    # The other voter still votes, and a rebuild from the stream gives the same figures.
    assert vote(client, url, staying, LLAMA, TOOLS[LLAMA][0], "skip").status_code == 202
    settle(servers)
    live = figures(servers)
    rebuilt = run_cli(pipeline.env, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert figures(servers) == live
    assert shown(client, pipeline.read_url) == {
        **expected,
        (LLAMA, TOOLS[LLAMA][0]): (expected[(LLAMA, TOOLS[LLAMA][0])][0], expected[(LLAMA, TOOLS[LLAMA][0])][1] + 1),
    }
    verified = run_cli(pipeline.env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_forget_by_cookie_clears_the_cookie_and_the_operator_sees_a_forgotten_voter(
    pipeline: Pipeline, servers: ServerAddresses
) -> None:
    with httpx.Client(timeout=10) as browser:
        assert browser.post(f"{pipeline.votes_url}/v1/voters").status_code == 201
        token = browser.cookies["shipskip_voter"]
        assert vote(browser, pipeline.votes_url, None, LLAMA, TOOLS[LLAMA][0], "ship").status_code == 202
        answer = browser.delete(f"{pipeline.votes_url}/v1/voters/me")
        assert answer.status_code == 202, answer.text
        assert "shipskip_voter" not in browser.cookies, "the browser drops the cookie"
        missing = vote(browser, pipeline.votes_url, None, LLAMA, TOOLS[LLAMA][0], "skip")
        assert (missing.status_code, missing.json()["error"]) == (401, "voter_token_missing")
        refused = vote(browser, pipeline.votes_url, token, LLAMA, TOOLS[LLAMA][0], "skip")
        assert (refused.status_code, refused.json()["error"]) == (401, "voter_forgotten")
    settle(servers)
    report = run_cli(pipeline.env, "voters", "--comparison", LLAMA, "--since", "all", "--json")
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)["top_voters"]
    forgotten = [row for row in rows if row["forgotten"]]
    assert len(forgotten) >= 1
    assert all(row["voided"] and row["counted_now"] == row["uncounted_now"] == 0 for row in forgotten)
    table = run_cli(pipeline.env, "voters", "--comparison", LLAMA, "--since", "all")
    assert forgotten[0]["voter_id"] in table.stdout
    assert "forgotten" in table.stdout
    status = json.loads(run_cli(pipeline.env, "status", "--json").stdout)
    assert status["forgotten_voters"] >= 1


def test_a_forget_without_a_good_token_is_refused_and_stores_nothing(
    pipeline: Pipeline, client: httpx.Client, servers: ServerAddresses
) -> None:
    head = asyncio.run(stream_last_seq(servers))
    missing = client.delete(f"{pipeline.votes_url}/v1/voters/me")
    assert (missing.status_code, missing.json()["error"]) == (401, "voter_token_missing")
    forged = client.delete(f"{pipeline.votes_url}/v1/voters/me", headers={"X-Voter-Token": "AAAA.BBBB"})
    assert (forged.status_code, forged.json()["error"]) == (401, "voter_token_refused")
    assert asyncio.run(stream_last_seq(servers)) == head


def test_without_redis_a_forget_is_refused_and_stores_nothing(
    pipeline: Pipeline, client: httpx.Client, servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Without Redis the token could not be stopped from voting: a 202 would promise what is not done.
    alone = start_votes_service(
        servers, tmp_path_factory.mktemp("no-redis"), SHIPSKIP_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    try:
        token = new_voter(client, alone.url)
        assert vote(client, alone.url, token, LLAMA, TOOLS[LLAMA][0], "skip").status_code == 202, "votes go on"
        head = asyncio.run(stream_last_seq(servers))
        answer = client.delete(f"{alone.url}/v1/voters/me", headers={"X-Voter-Token": token})
        assert (answer.status_code, answer.json()["error"]) == (503, "forget_unavailable"), answer.text
        assert int(answer.headers["retry-after"]) >= 1
        assert "set-cookie" not in answer.headers
        assert asyncio.run(stream_last_seq(servers)) == head
    finally:
        alone.stop()
