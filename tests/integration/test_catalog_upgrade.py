"""The upgrade from the single-key catalogue of earlier releases: services read it until ``shipskip migrate`` (or the
local stack's bootstrap) converts it to one entry per tool and comparison, and keep serving throughout."""

import asyncio
from pathlib import Path

import httpx
import msgspec
import nats
import pytest
from nats.js.errors import KeyNotFoundError

from contracts.catalog import Catalog, Comparison, decode_catalog, encode_catalog
from contracts.subjects import CATALOG_BUCKET, CATALOG_KEY
from infra.stack.bootstrap import DEMO_CATALOG, bootstrap
from infra.stack.servers import ServerAddresses
from services.serve import ServiceName
from services.shared.catalog_fold import HEAD_KEY
from tests.support import Pipeline, new_voter, reset_servers, run_cli, service_env, wait_until

DEMO = decode_catalog(DEMO_CATALOG.read_bytes())
OLD = Catalog(
    tools=DEMO.tools,
    comparisons=[
        *DEMO.comparisons,
        Comparison(id="llama-4-scout-vs-smolvlm2-2b", title="Old", tools=[DEMO.tools[0].id, DEMO.tools[2].id]),
    ],
)


async def store_as_before(servers: ServerAddresses, catalog: Catalog) -> None:
    """What the previous release's `catalog load` left: the whole catalogue in one key."""
    nc = await nats.connect(servers.nats_url)
    try:
        bucket = await nc.jetstream().create_key_value(bucket=CATALOG_BUCKET, history=16)
        await bucket.put(CATALOG_KEY, encode_catalog(catalog))
    finally:
        await nc.close()


async def keys_held(servers: ServerAddresses) -> set[str]:
    nc = await nats.connect(servers.nats_url)
    try:
        bucket = await nc.jetstream().key_value(CATALOG_BUCKET)
        held = set()
        for key in (CATALOG_KEY, HEAD_KEY):
            try:
                await bucket.get(key)
                held.add(key)
            except KeyNotFoundError:
                pass
        return held
    finally:
        await nc.close()


def test_services_read_the_old_key_until_migrate_converts_it(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> None:
    asyncio.run(reset_servers(servers, catalog_file=None))
    asyncio.run(store_as_before(servers, OLD))
    pipeline = Pipeline(servers, service_env(servers), tmp_path_factory.mktemp("upgrade-logs"))
    try:
        names: tuple[ServiceName, ...] = ("projector", "read", "votes")
        for name in names:
            pipeline.start(name)
        with httpx.Client(timeout=10) as client:
            old = OLD.comparisons[-1]
            token = new_voter(client, pipeline.votes_url)
            vote = {"tool_id": old.tools[0], "verdict": "ship"}
            url = f"{pipeline.votes_url}/v1/comparisons/{old.id}/votes"
            assert client.post(url, json=vote, headers={"X-Voter-Token": token}).status_code == 202
            listed = client.get(f"{pipeline.read_url}/v1/comparisons").json()
            assert [c["id"] for c in listed["comparisons"]] == sorted(c.id for c in OLD.comparisons)
            shown = run_cli(pipeline.env, "catalog", "show")
            assert (
                msgspec.json.decode(shown.stdout, type=Catalog).comparisons[-1].id
                == sorted(c.id for c in OLD.comparisons)[-1]
            )

            migrated = run_cli(pipeline.env, "migrate")
            assert migrated.returncode == 0, migrated.stderr
            assert "converted the single-key catalogue (3 tools, 3 comparisons) to one entry each" in migrated.stdout
            assert asyncio.run(keys_held(servers)) == {HEAD_KEY}
            wait_until(
                lambda: client.get(f"{pipeline.read_url}/v1/comparisons").json()["revision"] != listed["revision"]
            )
            # Nothing was lost on the way: the same comparisons, votes still taken, figures still served.
            after = client.get(f"{pipeline.read_url}/v1/comparisons").json()
            assert [c["id"] for c in after["comparisons"]] == [c["id"] for c in listed["comparisons"]]
            other = {"tool_id": old.tools[0], "verdict": "skip"}
            assert client.post(url, json=other, headers={"X-Voter-Token": token}).status_code == 202
            assert client.get(f"{pipeline.read_url}/v1/comparisons/{old.id}/community").status_code == 200

            again = run_cli(pipeline.env, "migrate")
            assert "one entry per tool and comparison" in again.stdout, again.stdout
    finally:
        pipeline.stop()


def test_bootstrap_converts_the_old_key_rather_than_loading_the_demo(servers: ServerAddresses, tmp_path: Path) -> None:
    asyncio.run(reset_servers(servers, catalog_file=None))
    asyncio.run(store_as_before(servers, OLD))
    asyncio.run(bootstrap(servers.nats, servers.database_url))
    assert asyncio.run(keys_held(servers)) == {HEAD_KEY}
    shown = run_cli(service_env(servers), "catalog", "show")
    assert {c.id for c in msgspec.json.decode(shown.stdout, type=Catalog).comparisons} == {
        c.id for c in OLD.comparisons
    }
