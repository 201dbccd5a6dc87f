"""SIGTERM to each service during sustained voting and reading: it stops taking work, finishes what is in flight
(publishes waiting for their ack, the batch in hand, open live streams), and exits cleanly (status 0) without
needing the SIGKILL that follows after 10 s. A new process then takes over, and nothing is lost or doubled."""

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import nats
import pytest

from contracts.subjects import TALLY_CONSUMER, VOTES_STREAM
from infra.stack.processes import ServiceProcess
from infra.stack.servers import ServerAddresses
from tests.faults.ingest import LOAD_ENV, TOOLS, Ingest, assert_exact
from tests.support import projected_position, running_pipeline, wait_until

STOP_TIMEOUT_S = 10.0
"""Then ServiceProcess.stop sends SIGKILL, and the exit status is -9."""


def stop_cleanly(process: ServiceProcess) -> None:
    code = process.stop(timeout=STOP_TIMEOUT_S)
    assert code == 0, f"{process.name} exited with {code} on SIGTERM:\n{process.log_tail()}"
    assert "Traceback" not in process.log_tail(400), process.log_tail(400)


async def ack_floor(servers: ServerAddresses) -> int:
    nc = await nats.connect(servers.nats_url)
    try:
        info = await nc.jetstream().consumer_info(VOTES_STREAM, TALLY_CONSUMER)
        assert info.ack_floor is not None
        return int(info.ack_floor.stream_seq or 0)
    finally:
        await nc.close()


@contextmanager
def readers(url: str, streams: int = 3, pollers: int = 3) -> Iterator[dict[str, int]]:
    """Open live streams and poll the figures until the process goes away; counts what each kind saw."""
    seen = {"events": 0, "ended": 0, "reads": 0, "refused": 0}
    lock = threading.Lock()
    comparison = next(iter(TOOLS))

    def stream() -> None:
        try:
            with httpx.stream("GET", f"{url}/v1/comparisons/{comparison}/community/stream", timeout=30) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        with lock:
                            seen["events"] += 1
            with lock:
                seen["ended"] += 1  # the server ended the stream: a clean end, not a cut connection
        except httpx.HTTPError:
            pass

    def poll() -> None:
        with httpx.Client(timeout=10) as client:
            while True:
                try:
                    response = client.get(f"{url}/v1/comparisons/{comparison}/community")
                except httpx.TransportError:
                    with lock:
                        seen["refused"] += 1
                    return
                assert response.status_code in (200, 503), response.text
                with lock:
                    seen["reads"] += 1

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(streams)]
    threads += [threading.Thread(target=poll, daemon=True) for _ in range(pollers)]
    for thread in threads:
        thread.start()
    try:
        yield seen
    finally:
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a reader was left hanging by the stopped process"


def test_sigterm_to_each_service_under_load(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> None:
    with running_pipeline(servers, tmp_path_factory.mktemp("sigterm"), **LOAD_ENV) as pipeline:
        ingest = Ingest(lambda: pipeline.votes_url, workers=6).start()
        try:
            # The votes service: requests in flight finish (publishes acked), new ones go to the next process.
            ingest.wait_for_votes(200)
            stop_cleanly(pipeline.processes["votes"])
            pipeline.start("votes")
            ingest.wait_for_votes(200)

            # The projector: the batch in hand is committed and acked before it exits.
            projector = pipeline.processes["projector"]
            stop_cleanly(projector)
            stopped_at = re.findall(r"projector stopped: partition \S+ at position (\d+)", projector.log_tail(400))
            assert stopped_at, projector.log_tail()
            position = asyncio.run(projected_position(servers))
            assert int(stopped_at[-1]) == position
            assert asyncio.run(ack_floor(servers)) == position, "the last committed batch was not acked"
            ingest.wait_for_votes(200)  # votes pile up in the stream meanwhile
            pipeline.start("projector")

            # The read API: open streams end, polls are answered until the port closes.
            wait_until(lambda: asyncio.run(projected_position(servers)) > position, timeout=30)
            with readers(pipeline.read_url) as seen:
                wait_until(lambda: seen["events"] >= 3 and seen["reads"] >= 50, timeout=30)
                stop_cleanly(pipeline.processes["read"])
            assert seen["ended"] == 3, seen
            pipeline.start("read")
            ingest.wait_for_votes(200)
        finally:
            ingest.stop()
        assert_exact(pipeline, servers, ingest)
