"""The projector killed with SIGKILL in the middle of a batch, again and again during sustained voting, and
restarted: no vote lost, none counted twice."""

import asyncio
from pathlib import Path

import nats
import pytest

from contracts.subjects import TALLY_CONSUMER, VOTES_STREAM
from infra.stack.servers import ServerAddresses
from tests.faults.ingest import LOAD_ENV, Ingest, assert_exact
from tests.support import running_pipeline, wait_until


async def unacked(servers: ServerAddresses) -> int:
    """Messages delivered to the projector and not acknowledged yet: a batch in its hands."""
    nc = await nats.connect(servers.nats_url)
    try:
        info = await nc.jetstream().consumer_info(VOTES_STREAM, TALLY_CONSUMER)
        return int(info.num_ack_pending or 0)
    finally:
        await nc.close()


@pytest.mark.parametrize("kills", [4, pytest.param(15, marks=pytest.mark.slow)])
def test_projector_killed_mid_batch_again_and_again_loses_and_doubles_nothing(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory, kills: int
) -> None:
    log_dir: Path = tmp_path_factory.mktemp("projector-crashes")
    with running_pipeline(servers, log_dir, **LOAD_ENV) as pipeline:
        # Many voters: most events are the last of their ballot, so a lost one shows in the tallies.
        ingest = Ingest(lambda: pipeline.votes_url, voters_per_worker=50).start()
        try:
            for _ in range(kills):
                ingest.wait_for_votes(150)
                wait_until(lambda: asyncio.run(unacked(servers)) > 0, timeout=30, interval=0.01)
                pipeline.processes["projector"].kill()
                ingest.wait_for_votes(100)  # votes go on piling up in the stream while it is down
                pipeline.start("projector")
            ingest.wait_for_votes(150)
        finally:
            ingest.stop()
        assert_exact(pipeline, servers, ingest)
