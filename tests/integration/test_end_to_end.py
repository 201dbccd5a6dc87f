"""Votes in through HTTP, out through the read API, with a projector crash in the middle: exact tallies."""

import asyncio
import random

import httpx

from contracts.subjects import VOTES_STREAM
from infra.stack.servers import ServerAddresses
from services.tally.partitions import UNPARTITIONED
from tests.support import (
    Pipeline,
    connect_nats,
    new_voter,
    projected_position,
    random_key,
    stream_last_seq,
    wait_until,
)

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
TOOLS = {
    LLAMA: ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1"),
    SMOL: ("smolvlm2-2b", "windsurf-swe-1"),
}

Model = dict[tuple[str, str, str], str | None]


def expected_tallies(model: Model) -> dict[tuple[str, str], tuple[int, int]]:
    tallies = {(c, t): [0, 0] for c, tools in TOOLS.items() for t in tools}
    for (comparison, tool, _), verdict in model.items():
        if verdict is not None:
            tallies[(comparison, tool)][0 if verdict == "ship" else 1] += 1
    return {key: (ship, skip) for key, (ship, skip) in tallies.items()}


def read_tallies(client: httpx.Client, read_url: str) -> dict[tuple[str, str], tuple[int, int]]:
    query = "&".join(f"comparison_id={c}" for c in TOOLS)
    body = client.get(f"{read_url}/v1/community?{query}").json()
    return {
        (comparison["comparison_id"], tool["tool_id"]): (tool["ship"], tool["skip"])
        for comparison in body["comparisons"]
        for tool in comparison["tools"]
    }


def test_many_voters_changes_retractions_retries_and_a_projector_crash(
    pipeline: Pipeline, client: httpx.Client, servers: ServerAddresses
) -> None:
    rng = random.Random(2026)
    voters = {new_voter(client, pipeline.votes_url): i for i in range(30)}
    model: Model = {}
    sent = 0
    for step in range(400):
        if step == 200:
            # A crash in the middle: whatever it had fetched but not committed is redelivered.
            pipeline.processes["projector"].kill()
        if step == 260:
            pipeline.start("projector")
        token = rng.choice(list(voters))
        comparison = rng.choice(list(TOOLS))
        tool = rng.choice(TOOLS[comparison])
        headers = {"X-Voter-Token": token, "Idempotency-Key": random_key()}
        if rng.random() < 0.2:
            response = client.delete(f"{pipeline.votes_url}/v1/comparisons/{comparison}/votes/{tool}", headers=headers)
            verdict = None
        else:
            verdict = rng.choice(["ship", "skip"])
            response = client.post(
                f"{pipeline.votes_url}/v1/comparisons/{comparison}/votes",
                json={"tool_id": tool, "verdict": verdict},
                headers=headers,
            )
        if response.status_code == 200:
            # A repeat of the voter's current verdict: nothing to store.
            assert response.json() == {"status": "unchanged", "event_id": None}
        else:
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "accepted"
            sent += 1
        model[(comparison, tool, token)] = verdict
        if rng.random() < 0.15:
            # The client did not see the answer and retries: same key, stored once.
            retry = client.request(
                response.request.method,
                str(response.request.url),
                content=response.request.content,
                headers={**headers, "Content-Type": "application/json"},
            )
            assert retry.status_code == response.status_code, retry.text
            assert retry.json() == response.json()  # the same answer as the first time

    assert asyncio.run(stream_last_seq(servers)) == sent
    expected = expected_tallies(model)
    wait_until(lambda: read_tallies(client, pipeline.read_url) == expected, timeout=15)
    wait_until(lambda: asyncio.run(projected_position(servers)) == sent, timeout=15)
    # Each comparison's figures hold every event up to its position.
    positions = [client.get(f"{pipeline.read_url}/v1/comparisons/{c}/community").json()["position"] for c in TOOLS]
    assert all(0 < p <= sent for p in positions)
    figures = client.get(f"{pipeline.read_url}/v1/comparisons/{LLAMA}/community").json()
    for tool in figures["tools"]:
        assert tool["votes"] == tool["ship"] + tool["skip"]
        if tool["votes"] >= figures["min_ballots"]:
            assert tool["ship_pct"] == round(100 * tool["ship"] / tool["votes"], 2)
        else:
            assert tool["ship_pct"] is None


def test_a_vote_becomes_visible_in_the_read_api(pipeline: Pipeline, client: httpx.Client) -> None:
    url = f"{pipeline.read_url}/v1/comparisons/{SMOL}/community"
    before = {t["tool_id"]: t["ship"] for t in client.get(url).json()["tools"]}
    token = new_voter(client, pipeline.votes_url)
    response = client.post(
        f"{pipeline.votes_url}/v1/comparisons/{SMOL}/votes",
        json={"tool_id": "smolvlm2-2b", "verdict": "ship"},
        headers={"X-Voter-Token": token},
    )
    assert response.status_code == 202
    wait_until(
        lambda: (
            {t["tool_id"]: t["ship"] for t in client.get(url).json()["tools"]}["smolvlm2-2b"]
            == before["smolvlm2-2b"] + 1
        ),
        timeout=5,
    )


def test_the_catalogue_lists_both_comparisons_with_panel_figures(pipeline: Pipeline, client: httpx.Client) -> None:
    body = client.get(f"{pipeline.read_url}/v1/comparisons").json()
    by_id = {c["id"]: c for c in body["comparisons"]}
    assert set(by_id) == set(TOOLS)
    llama = by_id[LLAMA]["tools"][0]
    assert llama["id"] == "llama-4-scout-fine-tuning-toolkit"
    assert llama["entry"] == "Free"
    assert llama["panel"] == {"ship": 3, "skip": 1, "ship_pct": 75.0}
    assert by_id[SMOL]["tools"][1]["panel"]["ship_pct"] == 100.0


def test_reads_of_unknown_comparisons_are_404_json(pipeline: Pipeline, client: httpx.Client) -> None:
    response = client.get(f"{pipeline.read_url}/v1/comparisons/nope/community")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_comparison"
    response = client.get(f"{pipeline.read_url}/v1/community?comparison_id={LLAMA}&comparison_id=nope")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    assert client.get(f"{pipeline.read_url}/v1/community").status_code == 400


def test_a_deleted_tally_consumer_is_made_again_and_the_votes_since_are_folded(
    pipeline: Pipeline, client: httpx.Client, servers: ServerAddresses
) -> None:
    """An operator deletes the projector's consumer (or a NATS restore lost it): the server refuses its pulls, and
    the projector creates the consumer again from its recorded position instead of asking on and on."""

    async def delete_consumer() -> None:
        nc = await connect_nats(servers)
        try:
            await nc.jetstream().delete_consumer(VOTES_STREAM, UNPARTITIONED.name)
        finally:
            await nc.close()

    wait_until(lambda: asyncio.run(projected_position(servers)) == asyncio.run(stream_last_seq(servers)), timeout=15)
    asyncio.run(delete_consumer())
    url = f"{pipeline.read_url}/v1/comparisons/{SMOL}/community"
    before = {t["tool_id"]: t["skip"] for t in client.get(url).json()["tools"]}["windsurf-swe-1"]
    for _ in range(3):
        response = client.post(
            f"{pipeline.votes_url}/v1/comparisons/{SMOL}/votes",
            json={"tool_id": "windsurf-swe-1", "verdict": "skip"},
            headers={"X-Voter-Token": new_voter(client, pipeline.votes_url)},
        )
        assert response.status_code == 202, response.text
    wait_until(
        lambda: {t["tool_id"]: t["skip"] for t in client.get(url).json()["tools"]}["windsurf-swe-1"] == before + 3,
        timeout=15,
    )
    assert asyncio.run(projected_position(servers)) == asyncio.run(stream_last_seq(servers))
