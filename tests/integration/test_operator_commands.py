"""The operator's commands as an operator meets them: through ``shipskip`` in a subprocess and the admin API.

Unknown ids are refused (exit 2 and one line; 404), a void says when it changes nothing, ``voters`` finds who is
behind a pattern, dead letters are logged, shown in full, retried and discarded, and ``status`` says what to do.
"""

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from contracts.catalog import decode_catalog, encode_catalog
from contracts.events import Origin, VoteCast, VoteRetracted, encode_event
from contracts.subjects import votes_subject
from infra.stack.bootstrap import DEMO_CATALOG
from infra.stack.servers import ServerAddresses
from tests.support import (
    Pipeline,
    fetch,
    projected_position,
    publish_raw,
    run_cli,
    running_pipeline,
    stream_last_seq,
    wait_until,
)

TOKEN = "admin-token-for-operator-commands-0123"
LLAMA = "llama-4-scout-vs-windsurf-swe-1"
SMOL = "smolvlm2-2b-vs-windsurf-swe-1"
LLAMA_TOOLS = ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1")


@pytest.fixture(scope="module")
def ops(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    logs = tmp_path_factory.mktemp("operator-logs")
    with running_pipeline(servers, logs, SHIPSKIP_ADMIN_TOKEN=TOKEN) as pipeline:
        yield pipeline


def admin(pipeline: Pipeline, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.request(method, f"{pipeline.read_url}/admin{path}", headers=headers, timeout=30, **kwargs)


def settle(servers: ServerAddresses) -> None:
    head = asyncio.run(stream_last_seq(servers))
    wait_until(lambda: asyncio.run(projected_position(servers)) == head, timeout=60)


def refused(result: Any, *fragments: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def cast(n: int, voter: str, tool: str, verdict: str, client: str | None, comparison: str = LLAMA) -> tuple[str, bytes]:
    event = VoteCast(f"oc{n}", comparison, tool, verdict, voter, datetime.now(UTC), Origin(client=client))  # type: ignore[arg-type]
    return votes_subject(comparison), encode_event(event)


def test_unknown_comparisons_are_refused_and_a_comparison_gone_from_the_catalogue_is_still_known(
    ops: Pipeline, servers: ServerAddresses, tmp_path: Path
) -> None:
    for args in (("verify",), ("rebuild",), ("voters",)):
        refused(run_cli(ops.env, *args, "--comparison", "no-such-comparison"), "no comparison 'no-such-comparison'")
    # A wildcard would match every comparison's subjects: refused before any server is asked.
    refused(run_cli(ops.env, "verify", "--comparison", ">"), "'>' is not a comparison id")
    refused(run_cli(ops.env, "voters", "--comparison", LLAMA, "--tool", "no-such-tool"), "no tool 'no-such-tool'")
    for path in ("/rebuild", "/verify"):
        answer = admin(ops, "POST", path, json={"comparison_id": "no-such-comparison"})
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "unknown_comparison"
        assert "no-such-comparison" in answer.json()["detail"]
    answer = admin(ops, "GET", "/voters", params={"comparison": "no-such-comparison"})
    assert (answer.status_code, answer.json()["error"]) == (404, "unknown_comparison")
    assert admin(ops, "POST", "/verify", json={"comparison_id": "a.b"}).status_code == 422
    nothing_started = asyncio.run(
        fetch(servers, "select * from rebuild_runs where comparison_id = 'no-such-comparison'")
    )
    assert nothing_started == []

    # Voted on, then taken out of the catalogue: its votes are still in the stream and its rows in the tables.
    asyncio.run(publish_raw(servers, [cast(1, "1" * 32, "smolvlm2-2b", "ship", None, SMOL)]))
    settle(servers)
    catalog = decode_catalog(DEMO_CATALOG.read_bytes())
    smaller = tmp_path / "catalog.json"
    smaller.write_bytes(encode_catalog(type(catalog)(tools=catalog.tools, comparisons=catalog.comparisons[:1])))
    # It holds a ballot, so taking it out needs --force (the catalogue's own rule).
    assert run_cli(ops.env, "catalog", "load", "--force", str(smaller)).returncode == 0
    try:
        verified = run_cli(ops.env, "verify", "--comparison", SMOL)
        assert verified.returncode == 0, verified.stderr
        assert "0 differences" in verified.stdout
        rebuilt = run_cli(ops.env, "rebuild", "--comparison", SMOL)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuilt 1 event " in rebuilt.stdout
        assert admin(ops, "POST", "/verify", json={"comparison_id": SMOL}).status_code == 202
        # Known from the stream alone: events the projector could not fold left no rows.
        asyncio.run(publish_raw(servers, [(votes_subject("only-in-the-stream"), b"{not json")]))
        settle(servers)
        assert run_cli(ops.env, "verify", "--comparison", "only-in-the-stream").returncode == 0
    finally:
        assert run_cli(ops.env, "catalog", "load", str(DEMO_CATALOG)).returncode == 0
        for seq in [r["seq"] for r in asyncio.run(fetch(servers, "select seq from dead_letters"))]:
            assert run_cli(ops.env, "dead-letters", "discard", str(seq), "--reason", "test debris").returncode == 0


def test_a_void_says_when_the_voter_has_no_ballots_or_is_voided_already(
    ops: Pipeline, servers: ServerAddresses
) -> None:
    voter, stranger, ahead = "a1" * 16, "b2" * 16, "c3" * 16
    asyncio.run(publish_raw(servers, [cast(10, voter, LLAMA_TOOLS[0], "ship", None)]))
    settle(servers)

    refused(run_cli(ops.env, "void-voter", stranger, "--reason", "typo"), f"voter {stranger} has no ballots", "--force")
    head = asyncio.run(stream_last_seq(servers))
    voided = run_cli(ops.env, "void-voter", voter, "--reason", "ring")
    assert voided.returncode == 0, voided.stderr
    assert f"voided {voter}" in voided.stdout
    assert "their 1 ballot in 1 comparison stop counting" in voided.stdout
    # At once (the void may not be folded yet) and once it is: nothing appended either time.
    again = run_cli(ops.env, "void-voter", voter, "--reason", "ring, again")
    assert again.returncode == 0, again.stderr
    assert f"{voter} is already voided (stream sequence {head + 1}" in again.stdout
    assert "reason: ring)" in again.stdout
    settle(servers)
    again = run_cli(ops.env, "void-voter", voter, "--reason", "ring, again")
    assert again.returncode == 0
    assert "already voided" in again.stdout
    assert "folded" in again.stdout
    assert asyncio.run(stream_last_seq(servers)) == head + 1, "a repeated void appended an event"

    forced = run_cli(ops.env, "void-voter", ahead, "--reason", "known spammer", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "they have no ballots yet" in forced.stdout

    answer = admin(ops, "POST", "/void", json={"voter_id": stranger, "reason": "typo"})
    assert (answer.status_code, answer.json()["error"]) == (404, "unknown_voter")
    assert '"force": true' in answer.json()["detail"]
    answer = admin(ops, "POST", "/void", json={"voter_id": voter, "reason": "ring"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "already_voided"
    answer = admin(ops, "POST", "/void", json={"voter_id": stranger, "reason": "known spammer", "force": True})
    assert answer.status_code == 202, answer.text
    assert answer.json()["voided"] is True
    settle(servers)
    rows = asyncio.run(fetch(servers, "select voter_id from voided_voters where voter_id = any($1)", [voter, stranger]))
    assert {r["voter_id"] for r in rows} == {voter, stranger}


def test_voters_shows_who_is_behind_a_pattern_per_voter_and_per_client_address(
    ops: Pipeline, servers: ServerAddresses
) -> None:
    ring, lone = "d" * 32, "e" * 32
    ring_voters = [f"{i:02x}" * 16 for i in range(0x40, 0x45)]
    old = [cast(100, "f" * 32, LLAMA_TOOLS[0], "skip", "e" * 32)]  # before the window asked for below
    asyncio.run(publish_raw(servers, old))
    time.sleep(6)
    window_opened = time.time()
    messages = [cast(200 + i, v, LLAMA_TOOLS[0], "ship", ring) for i, v in enumerate(ring_voters)]
    messages += [cast(300 + i, v, LLAMA_TOOLS[1], "skip", ring) for i, v in enumerate(ring_voters)]
    messages.append(cast(400, lone, LLAMA_TOOLS[1], "ship", "9" * 32))
    retraction = VoteRetracted("oc500", LLAMA, LLAMA_TOOLS[1], ring_voters[0], datetime.now(UTC), Origin(client=lone))
    messages.append((votes_subject(LLAMA), encode_event(retraction)))
    messages.append(cast(600, "0" * 32, "smolvlm2-2b", "ship", ring, SMOL))  # another comparison: not counted
    asyncio.run(publish_raw(servers, messages))
    settle(servers)

    def since() -> str:
        """A window opening between the two batches, with 5 s to spare for the command's start-up."""
        return f"{int(time.time() - window_opened) + 5}s"

    result = run_cli(ops.env, "voters", "--comparison", LLAMA, "--since", since(), "--limit", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["events"], report["casts"], report["retractions"]) == (12, 11, 1)
    assert (report["voters"], report["clients"]) == (6, 3)
    top = report["top_clients"][0]
    assert (top["client"], top["voters"], top["ballots"], top["casts"]) == (ring, 5, 10, 10)
    assert len(report["top_voters"]) == 3
    first = report["top_voters"][0]
    assert first["voter_id"] == ring_voters[0]  # three events; every other voter has two or one
    assert (first["ballots"], first["casts"], first["retractions"], first["clients"]) == (2, 2, 1, 2)
    assert (first["counted_now"], first["uncounted_now"], first["voided"]) == (1, 0, False)

    text = run_cli(ops.env, "voters", "--comparison", LLAMA, "--since", since())
    assert text.returncode == 0, text.stderr
    assert "12 events (11 cast, 1 retracted) from 6 voters at 3 client addresses" in text.stdout
    assert ring in text.stdout
    assert all(voter in text.stdout for voter in ring_voters)
    assert "f" * 32 not in text.stdout, "an event before the window was counted"

    one_tool = run_cli(ops.env, "voters", "--comparison", LLAMA, "--tool", LLAMA_TOOLS[0], "--since", "all", "--json")
    assert one_tool.returncode == 0, one_tool.stderr
    assert {v["voter_id"] for v in json.loads(one_tool.stdout)["top_voters"]} >= set(ring_voters[:3])
    assert all(v["ballots"] == 1 for v in json.loads(one_tool.stdout)["top_voters"])

    answer = admin(ops, "GET", "/voters", params={"comparison": LLAMA, "since": since(), "limit": "3"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["top_clients"][0]["client"] == ring
    assert answer.json()["events"] == 12
    for bad in ({"comparison": LLAMA, "since": "soon"}, {"comparison": LLAMA, "limit": "0"}, {"comparision": LLAMA}):
        answer = admin(ops, "GET", "/voters", params=bad)
        assert (answer.status_code, answer.json()["error"]) == (422, "invalid_query"), answer.text
    refused(run_cli(ops.env, "voters", "--comparison", LLAMA, "--since", "soon"), "'soon' is not a duration")


def _set_aside_logged(projector_log: Path) -> list[tuple[int, str]]:
    found = []
    for line in projector_log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("msg", "").startswith("dead letter set aside"):
                assert record["level"] == "warning"
                found.append((record["seq"], record["msg"]))
    return found


async def _publish_with_headers(servers: ServerAddresses, messages: list[tuple[bytes, dict[str, str] | None]]) -> None:
    nc = await nats.connect(servers.nats_url)
    try:
        js = nc.jetstream()
        for data, headers in messages:
            await js.publish(votes_subject(LLAMA), data, headers=headers)
    finally:
        await nc.close()


def test_dead_letters_are_logged_shown_retried_and_discarded(ops: Pipeline, servers: ServerAddresses) -> None:
    discarded_before = len(asyncio.run(fetch(servers, "select seq from dead_letters_discarded")))
    logged_before = len(_set_aside_logged(ops.processes["projector"].log_path))
    first = asyncio.run(stream_last_seq(servers)) + 1
    asyncio.run(
        _publish_with_headers(
            servers,
            [
                (b"{not json", {"X-Sent-By": "a-broken-script"}),
                (b'{"type": "vote.cast/9", "event_id": "future"}', None),
                (b"\xff\xfe not utf-8", None),
            ],
        )
    )
    settle(servers)
    bad_json, future, binary = first, first + 1, first + 2
    logged = _set_aside_logged(ops.processes["projector"].log_path)[logged_before:]
    assert sorted(seq for seq, _ in logged) == [bad_json, future, binary]
    assert any(seq == future and "Invalid value 'vote.cast/9'" in msg for seq, msg in logged)

    status = run_cli(ops.env, "status")
    assert "dead letters         3: inspect with `shipskip dead-letters list`, then retry or discard" in status.stdout
    listed = run_cli(ops.env, "dead-letters", "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[-1].startswith("3 dead letters: `shipskip dead-letters show SEQ`")

    shown = run_cli(ops.env, "dead-letters", "show", str(bad_json))
    assert shown.returncode == 0, shown.stderr
    assert "  X-Sent-By: a-broken-script" in shown.stdout
    assert "payload      9 bytes, UTF-8:\n{not json" in shown.stdout
    shown = run_cli(ops.env, "dead-letters", "show", str(binary))
    assert "not UTF-8" in shown.stdout
    assert "b'\\xff\\xfe not utf-8'" in shown.stdout
    detail = json.loads(run_cli(ops.env, "dead-letters", "show", str(future), "--json").stdout)
    assert detail["data"] == '{"type": "vote.cast/9", "event_id": "future"}'
    refused(run_cli(ops.env, "dead-letters", "show", "999999"), "no dead letter #999999")

    retried = run_cli(ops.env, "dead-letters", "retry", str(future))
    assert retried.returncode == 0, retried.stderr  # it ran; the letter stays dead, and it says why
    assert "retried 1 dead letter: 0 applied, 1 still dead" in retried.stdout
    assert f"#{future} still dead: undecodable event: Invalid value 'vote.cast/9'" in retried.stdout
    refused(run_cli(ops.env, "dead-letters", "retry", str(future), "999999"), "no dead letter #999999")

    discarded = run_cli(ops.env, "dead-letters", "discard", str(binary), "--reason", "test bytes, not a vote")
    assert discarded.returncode == 0, discarded.stderr
    assert f"discarded dead letter #{binary}" in discarded.stdout
    assert "2 dead letters left" in discarded.stdout
    again = run_cli(ops.env, "dead-letters", "discard", str(binary), "--reason", "twice")
    assert again.returncode == 0
    assert "already discarded" in again.stdout
    refused(run_cli(ops.env, "dead-letters", "discard", str(future), "--reason", " "), "give a reason")

    answer = admin(ops, "GET", f"/dead-letters/{bad_json}")
    assert answer.status_code == 200
    assert answer.json()["headers"]["X-Sent-By"] == "a-broken-script"
    assert admin(ops, "GET", "/dead-letters/999999").json()["error"] == "unknown_dead_letter"
    answer = admin(ops, "POST", "/dead-letters/retry", json={"seqs": [bad_json]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["still_dead"] == [bad_json]
    assert admin(ops, "POST", "/dead-letters/retry", json={"seqs": [999999]}).status_code == 404
    assert admin(ops, "POST", f"/dead-letters/{future}/discard", json={"reason": ""}).status_code == 422
    answer = admin(ops, "POST", f"/dead-letters/{future}/discard", json={"reason": "a future schema, never shipped"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["died_because"].startswith("undecodable event")

    # The last one, discarded through the CLI too; a rebuild replays all three and sets none aside again.
    assert run_cli(ops.env, "dead-letters", "discard", str(bad_json), "--reason", "broken script").returncode == 0
    rebuilt = run_cli(ops.env, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "dead letter set aside" not in rebuilt.stderr
    assert run_cli(ops.env, "dead-letters", "list").stdout.strip() == "no dead letters"
    status = json.loads(run_cli(ops.env, "status", "--json").stdout)
    assert status["dead_letters"] == 0
    assert "dead letters         0\n" in run_cli(ops.env, "status").stdout
    audit = run_cli(ops.env, "dead-letters", "list", "--discarded")
    assert f"{discarded_before + 3} discarded dead letters" in audit.stdout
    assert "test bytes, not a vote" in audit.stdout
    rows = asyncio.run(fetch(servers, "select seq, data from dead_letters_discarded order by seq"))
    assert [(r["seq"], bytes(r["data"])) for r in rows][-3:] == [
        (bad_json, b"{not json"),
        (future, b'{"type": "vote.cast/9", "event_id": "future"}'),
        (binary, b"\xff\xfe not utf-8"),
    ]
    assert len(_set_aside_logged(ops.processes["projector"].log_path)) == logged_before + 3, "logged twice"
