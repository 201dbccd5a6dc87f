"""SHIPSKIP_STREAM_REPLICAS on a three-node NATS cluster (infra/nats-cluster/): what the deployment's migration job
relies on (infra/deploy/). ``shipskip migrate`` creates the VOTES stream and the catalogue bucket with three
replicas, or raises them to three when they were made with one; a process configured with fewer never lowers
them; the catalogue load writes to the replicated bucket."""

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.subjects import CATALOG_BUCKET, VOTES_STREAM
from infra.stack.bootstrap import DEMO_CATALOG
from infra.stack.servers import ServerAddresses
from services.shared.jetstream import catalog_bucket, ensure_votes_stream
from tests.faults.cluster import NatsCluster, connect
from tests.support import run_cli, service_env, wait_until


async def replicas(urls: str) -> tuple[int, int, int]:
    """(stream replicas configured, stream peers besides the leader, catalogue bucket replicas configured)."""
    nc = await connect(urls)
    try:
        js = nc.jetstream()
        stream = await js.stream_info(VOTES_STREAM)
        bucket = await js.stream_info("KV_" + CATALOG_BUCKET)
    finally:
        await nc.close()
    peers = len(stream.cluster.replicas or []) if stream.cluster is not None else 0
    return stream.config.num_replicas or 1, peers, bucket.config.num_replicas or 1


async def create_with_one_replica(urls: str) -> None:
    """As a stack set up before SHIPSKIP_STREAM_REPLICAS would have left them."""
    nc = await connect(urls)
    try:
        js = nc.jetstream()
        await ensure_votes_stream(js, 120.0, replicas=1)
        await catalog_bucket(js, replicas=1)
    finally:
        await nc.close()


async def started_with_one_replica(urls: str) -> None:
    """What a votes API or projector configured with one replica does at start."""
    nc = await connect(urls)
    try:
        await ensure_votes_stream(nc.jetstream(), 120.0, replicas=1)
    finally:
        await nc.close()


@pytest.mark.parametrize("existing", [False, True], ids=["fresh-cluster", "stream-made-with-one-replica"])
def test_migrate_gives_the_stream_and_the_catalogue_three_replicas(servers: ServerAddresses, existing: bool) -> None:
    with NatsCluster() as cluster:
        env = service_env(
            ServerAddresses(cluster.urls, servers.database_url, servers.redis_url), SHIPSKIP_STREAM_REPLICAS="3"
        )
        if existing:
            asyncio.run(create_with_one_replica(cluster.urls))
            assert asyncio.run(replicas(cluster.urls)) == (1, 0, 1)
        migrated = run_cli(env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert f"stream {VOTES_STREAM}: 3 replicas; catalogue bucket: 3 replicas" in migrated.stdout
        wait_until(lambda: asyncio.run(replicas(cluster.urls)) == (3, 2, 3), timeout=30, interval=0.5)

        asyncio.run(started_with_one_replica(cluster.urls))
        assert asyncio.run(replicas(cluster.urls))[0] == 3, "a process configured with one replica lowered them"

        loaded = run_cli(env, "catalog", "load", str(DEMO_CATALOG))
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        shown = run_cli(env, "catalog", "show")
        assert shown.returncode == 0, shown.stderr
        assert "llama-4-scout-vs-windsurf-swe-1" in shown.stdout
        assert asyncio.run(replicas(cluster.urls))[2] == 3


def test_migrate_waits_for_the_servers_its_replicas_need(servers: ServerAddresses, tmp_path: Path) -> None:
    """A migration job started while the cluster is still forming (two of its three nodes up: three replicas have
    no room yet) waits for the third instead of failing."""
    cluster = NatsCluster()
    errors = tmp_path / "migrate.stderr"
    try:
        cluster.start("n1")
        cluster.start("n2")
        cluster.wait_ready()
        env = service_env(
            ServerAddresses(cluster.urls, servers.database_url, servers.redis_url), SHIPSKIP_STREAM_REPLICAS="3"
        )
        with errors.open("w") as stderr_file:
            migrate = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "migrate"],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                text=True,
            )
        try:
            # Until it says it waits (without the wait, it fails at once), then still running when the third starts.
            wait_until(
                lambda: "waiting for the cluster's servers" in errors.read_text() or migrate.poll() is not None,
                timeout=60,
            )
            assert migrate.poll() is None, errors.read_text()
            cluster.start("n3")
            stdout, _ = migrate.communicate(timeout=60)
        finally:
            if migrate.poll() is None:
                migrate.kill()
        stderr = errors.read_text()
        assert migrate.returncode == 0, stdout + stderr
        assert "waiting for the cluster's servers" in stderr
        assert f"stream {VOTES_STREAM}: 3 replicas; catalogue bucket: 3 replicas" in stdout
    finally:
        cluster.stop()
        shutil.rmtree(cluster.data_dir, ignore_errors=True)
