"""/metrics with several granian workers: whichever worker answers a scrape, it counts every worker's requests.

The workers write to one folder per run of the service, made by ``shipskip serve`` before it becomes granian
(services/shared/metrics_folder.py); the test finds which worker
answered each request from its access log line (``SHIPSKIP_ACCESS_LOG=all`` logs every request with its pid), and
which workers listen on the ops port (every one, SO_REUSEPORT: services/shared/ops_port.py) from its /healthz.
"""

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.stack.processes import start_service
from infra.stack.servers import ServerAddresses, free_port
from tests.integration.metrics_text import scrape
from tests.support import reset_servers, service_env, wait_until

WORKERS = 2


@pytest.fixture(scope="module")
def two_workers(
    servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path, Path, int]]:
    asyncio.run(reset_servers(servers))
    metrics_dir = tmp_path_factory.mktemp("metrics")
    port, ops_port = free_port(), free_port()
    env = service_env(
        servers,
        SHIPSKIP_METRICS_DIR=str(metrics_dir),
        SHIPSKIP_ACCESS_LOG="all",
        SHIPSKIP_VOTES_METRICS_PORT=str(ops_port),
    )
    # `shipskip serve`, which makes the run's metrics folder; not waited for by start_service, whose /healthz
    # requests would be counted.
    service = start_service("votes", env, tmp_path_factory.mktemp("workers-log"), port, wait=False, workers=WORKERS)
    try:
        wait_until(lambda: _answers(service.url), timeout=60)
        yield service.url, service.ops_url, metrics_dir, service.log_path, service.process.pid
    finally:
        service.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _pids_of(log_path: Path, route: str) -> list[int]:
    pids = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            fields = json.loads(line)
            if fields.get("route") == route and fields.get("logger") == "shipskip.access":
                pids.append(int(fields["pid"]))
    return pids


def test_every_scrape_counts_the_requests_of_every_worker(two_workers: tuple[str, str, Path, Path, int]) -> None:
    url, ops_url, metrics_dir, log_path, main_pid = two_workers
    sent = 0
    # New connections until both workers have answered some (granian hands connections to either).
    while len(set(_pids_of(log_path, "/healthz"))) < WORKERS:
        for _ in range(10):
            with httpx.Client(timeout=10) as client:  # a new connection each time
                assert client.get(url + "/healthz").status_code == 200
            sent += 1
        assert sent < 2000, "one worker took every connection"
    wait_until(lambda: len(_pids_of(log_path, "/healthz")) == sent, timeout=10)
    pids = _pids_of(log_path, "/healthz")
    assert len(set(pids)) == WORKERS

    def counted() -> float:
        return scrape(ops_url).value("shipskip_http_requests_total", route="/healthz", status="200")

    # Every worker listens on the ops port: new connections reach each of them (asked in-process, those /healthz
    # answers are not requests of the public port, and are not counted).
    listening: set[int] = set()
    for _ in range(200):
        with httpx.Client(timeout=10) as client:
            listening.add(client.get(ops_url + "/healthz").json()["pid"])
        if listening >= set(pids):
            break
    assert listening == set(pids), "every worker answers on the ops port"

    # The other workers flush their counts every second; then every scrape, by any worker, sees them all.
    wait_until(lambda: counted() == sent, timeout=15)
    for _ in range(20):
        assert counted() == sent
    assert httpx.get(url + "/metrics", timeout=10).status_code == 404

    # One folder for this run, named after granian's main process (the pid `shipskip serve` passed on), holding the
    # files of both workers.
    (run_folder,) = metrics_dir.iterdir()
    assert run_folder.name.startswith(f"votes-{main_pid}-")
    writers = {int(name.rsplit("_", 1)[1].removesuffix(".db")) for name in os.listdir(run_folder) if "counter" in name}
    assert set(pids) <= writers
