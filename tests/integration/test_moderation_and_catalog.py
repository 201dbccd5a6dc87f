"""Voids, dead letters, retired event versions and catalogue changes, through the real processes and CLI."""

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx

from contracts.catalog import decode_catalog, encode_catalog
from contracts.events import VoteCast, encode_event
from contracts.subjects import MODERATION_SUBJECT, votes_subject
from infra.stack.bootstrap import DEMO_CATALOG
from infra.stack.servers import ServerAddresses
from tests.support import Pipeline, fetch, projected_position, publish_raw, run_cli, stream_last_seq, wait_until

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
AT = datetime(2026, 11, 23, tzinfo=UTC)


def counts(servers: ServerAddresses, comparison: str, tool: str) -> tuple[int, int]:
    rows = asyncio.run(
        fetch(servers, "select ship, skip from tallies where comparison_id = $1 and tool_id = $2", comparison, tool)
    )
    return (rows[0]["ship"], rows[0]["skip"]) if rows else (0, 0)


def settle(servers: ServerAddresses) -> None:
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head, timeout=30)


def cast(voter: str, comparison: str, tool: str, verdict: str, n: int) -> tuple[str, bytes]:
    event = VoteCast(f"m{n}-{voter[:6]}", comparison, tool, verdict, voter, AT)  # type: ignore[arg-type]
    return votes_subject(comparison), encode_event(event)


def test_a_voided_voter_leaves_every_tally_and_a_rebuild_agrees(pipeline: Pipeline, servers: ServerAddresses) -> None:
    bad, good = "b" * 32, "a" * 32
    asyncio.run(
        publish_raw(
            servers,
            [
                cast(bad, LLAMA, "windsurf-swe-1", "ship", 1),
                cast(bad, SMOL, "smolvlm2-2b", "skip", 2),
                cast(good, LLAMA, "windsurf-swe-1", "ship", 3),
            ],
        )
    )
    settle(servers)
    before_llama, before_smol = counts(servers, LLAMA, "windsurf-swe-1"), counts(servers, SMOL, "smolvlm2-2b")

    refused = run_cli(pipeline.env, "void-voter", "not-a-voter", "--reason", "spam")
    assert refused.returncode == 2
    assert "not a voter id" in refused.stderr
    result = run_cli(pipeline.env, "void-voter", bad, "--reason", "ballot stuffing from one script")
    assert result.returncode == 0, result.stderr
    settle(servers)
    assert counts(servers, LLAMA, "windsurf-swe-1") == (before_llama[0] - 1, before_llama[1])
    assert counts(servers, SMOL, "smolvlm2-2b") == (before_smol[0], before_smol[1] - 1)
    # Later votes of a voided voter do not count either.
    asyncio.run(publish_raw(servers, [cast(bad, LLAMA, "llama-4-scout-fine-tuning-toolkit", "ship", 4)]))
    settle(servers)
    after = {(c, t): counts(servers, c, t) for c, t in [(LLAMA, "windsurf-swe-1"), (SMOL, "smolvlm2-2b")]}
    llama_tool = counts(servers, LLAMA, "llama-4-scout-fine-tuning-toolkit")

    assert run_cli(pipeline.env, "rebuild").returncode == 0
    assert {key: counts(servers, *key) for key in after} == after
    assert counts(servers, LLAMA, "llama-4-scout-fine-tuning-toolkit") == llama_tool
    assert run_cli(pipeline.env, "verify").returncode == 0


def test_a_retired_event_version_folds_with_the_current_one(pipeline: Pipeline, servers: ServerAddresses) -> None:
    tool = "smolvlm2-2b"
    before = counts(servers, SMOL, tool)
    retired = json.dumps(
        {
            "type": "vote.cast/0",
            "event_id": "old-1",
            "comparison_id": SMOL,
            "tool_id": tool,
            "ship": False,
            "voter_id": "c" * 32,
            "cast_at": "2026-01-01T00:00:00Z",
        }
    ).encode()
    asyncio.run(publish_raw(servers, [(votes_subject(SMOL), retired), cast("d" * 32, SMOL, tool, "ship", 5)]))
    settle(servers)
    assert counts(servers, SMOL, tool) == (before[0] + 1, before[1] + 1)
    assert asyncio.run(fetch(servers, "select * from dead_letters where subject = $1", votes_subject(SMOL))) == []


def test_dead_letters_are_kept_listed_and_retried(pipeline: Pipeline, servers: ServerAddresses) -> None:
    asyncio.run(
        publish_raw(
            servers,
            [
                (votes_subject(LLAMA), b"{not json"),
                (votes_subject(LLAMA), b'{"type": "vote.cast/9", "event_id": "future"}'),
                # A valid event on the wrong subject: not folded, kept.
                (MODERATION_SUBJECT, cast("e" * 32, SMOL, "smolvlm2-2b", "ship", 6)[1]),
            ],
        )
    )
    settle(servers)
    listed = run_cli(pipeline.env, "dead-letters", "list")
    assert listed.returncode == 0
    assert "3 dead letters" in listed.stdout
    assert "undecodable event" in listed.stdout
    assert "expected 'votes.v1.smolvlm2-2b-vs-windsurf-swe-1'" in listed.stdout

    # An operator's fix: the letter recorded against the wrong subject is corrected by hand, then retried.
    before = counts(servers, SMOL, "smolvlm2-2b")
    asyncio.run(
        fetch(
            servers, "update dead_letters set subject = $1 where subject = $2", votes_subject(SMOL), MODERATION_SUBJECT
        )
    )
    retried = run_cli(pipeline.env, "dead-letters", "retry")
    assert retried.returncode == 0, retried.stderr  # it did what was asked; two are still undecodable
    assert "retried 3 dead letters: 1 applied, 2 still dead" in retried.stdout
    assert counts(servers, SMOL, "smolvlm2-2b") == (before[0] + 1, before[1])
    status = json.loads(run_cli(pipeline.env, "status", "--json").stdout)
    assert status["dead_letters"] == 2
    assert status["lag_events"] == 0


def test_catalogue_changes_reach_the_votes_service_without_a_restart(
    pipeline: Pipeline, servers: ServerAddresses, tmp_path: Path
) -> None:
    catalog = decode_catalog(DEMO_CATALOG.read_bytes())
    token = httpx.post(f"{pipeline.votes_url}/v1/voters").json()["voter_token"]
    headers = {"X-Voter-Token": token}
    vote = {"tool_id": "smolvlm2-2b", "verdict": "ship"}
    url = f"{pipeline.votes_url}/v1/comparisons/{SMOL}/votes"
    assert httpx.post(url, json=vote, headers=headers).status_code == 202
    settle(servers)
    kept = counts(servers, SMOL, "smolvlm2-2b")

    smaller = tmp_path / "catalog.json"
    smaller.write_bytes(encode_catalog(type(catalog)(tools=catalog.tools, comparisons=catalog.comparisons[:1])))
    refused = run_cli(pipeline.env, "catalog", "load", str(smaller))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1, "one line"
    assert f"removes 1 comparison with votes: {SMOL} (" in refused.stderr
    assert "--force" in refused.stderr
    assert httpx.post(url, json=vote, headers=headers).status_code == 200, "refused: nothing changed"
    checked = run_cli(pipeline.env, "catalog", "load", "--check", str(smaller))
    assert checked.returncode == 2, checked
    assert f"comparisons removed: {SMOL}" in checked.stdout
    assert f"removes 1 comparison with votes: {SMOL} (" in checked.stderr
    loaded = run_cli(pipeline.env, "catalog", "load", "--force", str(smaller))
    assert loaded.returncode == 0, loaded.stderr
    assert f"comparisons removed: {SMOL}" in loaded.stdout
    wait_until(lambda: httpx.post(url, json=vote, headers=headers).status_code == 404, timeout=10)
    assert counts(servers, SMOL, "smolvlm2-2b") == kept, "removing a comparison keeps its history"
    shown = json.loads(run_cli(pipeline.env, "catalog", "show").stdout)
    assert [c["id"] for c in shown["comparisons"]] == [LLAMA]

    assert run_cli(pipeline.env, "catalog", "load", str(DEMO_CATALOG)).returncode == 0
    other = {"tool_id": "smolvlm2-2b", "verdict": "skip"}  # a change of mind: accepted, not "unchanged"
    wait_until(lambda: httpx.post(url, json=other, headers=headers).status_code == 202, timeout=10)


def test_a_bad_catalogue_file_is_refused_with_the_place_at_fault(pipeline: Pipeline, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    document = json.loads(DEMO_CATALOG.read_text())
    document["comparisons"][1]["tools"][1] = "no-such-tool"
    bad.write_text(json.dumps(document, indent=2))
    result = run_cli(pipeline.env, "catalog", "load", str(bad))
    assert result.returncode == 1
    assert "unknown tool 'no-such-tool'" in result.stderr
    assert "$.comparisons[1].tools[1]" in result.stderr
    bad.write_text('{\n  "tools": [],\n  "comparisons": [,]\n}')
    result = run_cli(pipeline.env, "catalog", "load", str(bad))
    assert result.returncode == 1
    assert "line 3" in result.stderr
    shown = json.loads(run_cli(pipeline.env, "catalog", "show").stdout)
    assert len(shown["comparisons"]) == 2, "a refused file changes nothing"
