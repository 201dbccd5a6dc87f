"""A three-node NATS cluster (infra/nats-cluster/node.conf), the VOTES stream replicated three ways, the services
given all three addresses: the node leading the stream is killed (SIGKILL) during sustained voting, a new leader
takes over, the node comes back and catches up; nothing acknowledged is lost, nothing counted twice."""

import asyncio

import asyncpg
import pytest

from contracts.subjects import CATALOG_BUCKET, VOTES_STREAM
from infra.stack.bootstrap import bootstrap
from infra.stack.servers import ServerAddresses
from services.shared.jetstream import until_placed, votes_stream_config
from tests.faults.cluster import NatsCluster, connect
from tests.faults.ingest import LOAD_ENV, Ingest, assert_exact
from tests.support import Pipeline, service_env, wait_until


async def prepare(addresses: ServerAddresses) -> None:
    """What an operator does once for a cluster: the stream and the catalogue bucket with three replicas (the
    services keep the replica count they find), then the usual bootstrap; an empty database."""
    conn = await asyncpg.connect(addresses.database_url)
    try:
        await conn.execute("drop schema public cascade; create schema public")
    finally:
        await conn.close()
    nc = await connect(addresses.nats_url)
    try:
        js = nc.jetstream()
        # As the services do: a cluster still forming has no peers for three replicas yet.
        await until_placed(lambda: js.add_stream(votes_stream_config(120.0, replicas=3)), "votes stream")
        await until_placed(lambda: js.create_key_value(bucket=CATALOG_BUCKET, history=16, replicas=3), "catalogue")
    finally:
        await nc.close()
    await bootstrap(addresses.nats, addresses.database_url)


async def stream_cluster(addresses: ServerAddresses) -> tuple[str | None, int, list[tuple[str, bool, int]]]:
    """The stream's leader, replica count, and each other replica as (name, current, lag)."""
    nc = await connect(addresses.nats_url)
    try:
        info = await nc.jetstream().stream_info(VOTES_STREAM)
    finally:
        await nc.close()
    assert info.cluster is not None
    replicas = [
        (peer.name or "", bool(peer.current) and not peer.offline, peer.lag or 0)
        for peer in info.cluster.replicas or []
    ]
    return info.cluster.leader, info.config.num_replicas or 1, replicas


def caught_up(addresses: ServerAddresses) -> bool:
    leader, _, replicas = asyncio.run(stream_cluster(addresses))
    return leader is not None and len(replicas) == 2 and all(current and lag == 0 for _, current, lag in replicas)


@pytest.mark.parametrize("rounds", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_a_node_of_three_killed_during_ingest_and_brought_back_loses_nothing_acknowledged(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, rounds: int
) -> None:
    with NatsCluster() as cluster:
        addresses = ServerAddresses(cluster.urls, servers.database_url, servers.redis_url)
        asyncio.run(prepare(addresses))
        pipeline = Pipeline(addresses, service_env(addresses, **LOAD_ENV), tmp_path_factory.mktemp("nats-cluster"))
        try:
            for name in ("projector", "read", "votes"):
                pipeline.start(name)
            wait_until(lambda: caught_up(addresses), timeout=30)
            ingest = Ingest(lambda: pipeline.votes_url).start()
            try:
                for _ in range(rounds):
                    ingest.wait_for_votes(200)
                    leader, replicas, _ = asyncio.run(stream_cluster(addresses))
                    assert replicas == 3, "the services scaled the stream down"
                    assert leader is not None
                    cluster.kill(leader)
                    ingest.wait_for_votes(300, timeout=120)  # taken again once another node leads the stream
                    assert asyncio.run(stream_cluster(addresses))[0] not in (None, leader)
                    cluster.start(leader)
                    cluster.wait_ready()
                    wait_until(lambda: caught_up(addresses), timeout=60, interval=0.5)
                ingest.wait_for_votes(200)
            finally:
                ingest.stop()
            refused = ingest.outcomes.statuses[503] + ingest.outcomes.statuses[504]
            assert refused > 0, "the node's death went unnoticed: was the leader killed?"
            assert all(process.alive() for process in pipeline.processes.values())
            assert_exact(pipeline, addresses, ingest)
            assert asyncio.run(stream_cluster(addresses))[1] == 3
        finally:
            pipeline.stop()
