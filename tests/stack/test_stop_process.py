"""Stopping a service leaves none of its processes behind, even when granian does not stop by itself.

granian (2.8) does not stop a worker that receives SIGTERM while its application is still starting (here: the
read API waiting for a NATS that is not there): the worker sits idle and the main process waits for it forever.
``stop_process`` then SIGKILLs the service's whole process group, so no worker outlives it holding the port.
"""

import os
from pathlib import Path

from infra.stack.processes import start_service, stop_process
from infra.stack.servers import free_port
from tests.stack.test_up_workers import descendants, port_open, still_running
from tests.support import wait_until


def test_a_service_stuck_in_start_up_is_stopped_with_all_its_workers(tmp_path: Path) -> None:
    nowhere = free_port()  # nothing listens here: the workers keep trying to connect
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "GRANIAN_"))}
    env.update(
        {
            "SHIPSKIP_NATS_URL": f"nats://127.0.0.1:{nowhere}",
            "SHIPSKIP_DATABASE_URL": f"postgresql://shipskip@127.0.0.1:{nowhere}/shipskip",
            "SHIPSKIP_REDIS_URL": f"redis://127.0.0.1:{nowhere}/0",
            "SHIPSKIP_STACK_FILE": "/nonexistent/shipskip-stack.json",
        }
    )
    port = free_port()
    service = start_service("read", env, tmp_path, port, wait=False, workers=2)
    try:
        # granian's main process and its two workers, all starting.
        wait_until(lambda: len(descendants(service.process.pid)) == 2, timeout=60)
        tree = {service.process.pid: "", **descendants(service.process.pid)}
        started = {pid: start for pid, start in tree.items() if pid != service.process.pid}
    finally:
        status = stop_process(service.process, timeout=3.0)
    assert status != 0  # it did not finish by itself: killed
    # SIGKILL takes effect asynchronously: the workers are gone (or zombies) moments later.
    wait_until(lambda: not still_running(started), timeout=10)
    assert not port_open(port)
