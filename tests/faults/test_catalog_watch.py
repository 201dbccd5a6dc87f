"""The services follow the catalogue with a KV watch: NATS restarted under them, they take in the next change
without a restart of their own (nats-py re-creates the watch's consumer; the head check re-watches otherwise)."""

import asyncio
from pathlib import Path

import httpx
import msgspec
import pytest

from contracts.catalog import Catalog, decode_catalog, encode_catalog
from infra.stack.bootstrap import DEMO_CATALOG
from infra.stack.servers import EmbeddedServers, ServerAddresses
from tests.faults.test_outages import jetstream_serves
from tests.support import new_voter, run_cli, running_pipeline, wait_until

SMOL = "smolvlm2-2b-vs-windsurf-swe-1"


def test_a_change_after_a_nats_restart_reaches_every_service(
    servers: ServerAddresses, stack: EmbeddedServers, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    demo = decode_catalog(DEMO_CATALOG.read_bytes())
    with running_pipeline(servers, tmp_path_factory.mktemp("catalog-watch")) as pipeline, httpx.Client() as client:
        try:
            stack.stop_server("nats")
        finally:
            stack.start_server("nats")
            wait_until(lambda: asyncio.run(jetstream_serves(servers)), timeout=60)
        tools = [msgspec.structs.replace(t, entry="$5/mo") if t.id == "smolvlm2-2b" else t for t in demo.tools]
        changed = tmp_path / "changed.json"
        changed.write_bytes(encode_catalog(Catalog(tools=tools, comparisons=demo.comparisons[:1])))
        loaded = run_cli(pipeline.env, "catalog", "load", str(changed))
        assert loaded.returncode == 0, loaded.stderr

        wait_until(lambda: client.get(f"{pipeline.read_url}/v1/tools/smolvlm2-2b").json()["tool"]["entry"] == "$5/mo",
                   timeout=30)  # fmt: skip
        token = new_voter(client, pipeline.votes_url)
        url = f"{pipeline.votes_url}/v1/comparisons/{SMOL}/votes"
        wait_until(
            lambda: client.post(url, json={"tool_id": "smolvlm2-2b", "verdict": "ship"},
                                headers={"X-Voter-Token": token}).status_code == 404,
            timeout=30,
        )  # fmt: skip
        assert client.get(f"{pipeline.read_url}/v1/comparisons/{SMOL}/community").status_code == 404
