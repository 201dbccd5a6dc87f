"""Three local nats-server processes clustered with infra/nats-cluster/node.conf, on free ports."""

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import nats
import nats.errors
from nats.aio.client import Client as NATS

from infra.stack.servers import _free_ports, nats_server_path

NODE_CONF = Path(__file__).parents[2] / "infra" / "nats-cluster" / "node.conf"
NAMES = ("n1", "n2", "n3")


async def connect(urls: str) -> NATS:
    """A plain client on every node of ``urls`` (comma-separated), as the services connect."""
    return await nats.connect(urls.split(","), connect_timeout=2, max_reconnect_attempts=5, reconnect_time_wait=0.2)


class NodeExited(RuntimeError):
    pass


@dataclass
class NatsCluster:
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="shipskip-nats-cluster-")))
    client_ports: dict[str, int] = field(default_factory=dict)
    cluster_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pick_ports()

    def _pick_ports(self) -> None:
        ports = _free_ports(2 * len(NAMES))
        self.client_ports = dict(zip(NAMES, ports[: len(NAMES)], strict=True))
        self.cluster_ports = dict(zip(NAMES, ports[len(NAMES) :], strict=True))

    @property
    def urls(self) -> str:
        """Every node's client address, comma-separated: what SHIPSKIP_NATS_URL holds for a cluster."""
        return ",".join(self.url(name) for name in NAMES)

    def url(self, name: str) -> str:
        return f"nats://127.0.0.1:{self.client_ports[name]}"

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def start(self, name: str) -> None:
        others = [other for other in NAMES if other != name]
        env = {
            **os.environ,
            "SHIPSKIP_NODE_NAME": name,
            "SHIPSKIP_CLIENT_PORT": str(self.client_ports[name]),
            "SHIPSKIP_CLUSTER_PORT": str(self.cluster_ports[name]),
            "SHIPSKIP_ROUTE_A": f"nats://127.0.0.1:{self.cluster_ports[others[0]]}",
            "SHIPSKIP_ROUTE_B": f"nats://127.0.0.1:{self.cluster_ports[others[1]]}",
            "SHIPSKIP_STORE_DIR": str(self.data_dir / name),
        }
        with self.log_path(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [str(nats_server_path()), "-c", str(NODE_CONF)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        """SIGKILL: the node dies with whatever it had not written out."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every running node answers JetStream requests (a meta leader is elected)."""
        deadline = time.monotonic() + timeout
        for name in self.processes:
            while not asyncio.run(_jetstream_answers(self.url(name))):
                if self.processes[name].poll() is not None:
                    raise NodeExited(f"{name} exited:\n{self.log_path(name).read_text(errors='replace')[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} has no JetStream after {timeout}s")
                time.sleep(0.2)

    def __enter__(self) -> Self:
        for attempt in range(3):
            for name in NAMES:
                self.start(name)
            try:
                self.wait_ready()
                return self
            except NodeExited as exc:
                self.stop()
                # A free port can be taken by another process between our pick and the node's bind.
                if attempt == 2 or "address already in use" not in str(exc):
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    raise
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir.mkdir()
                self._pick_ports()
        raise AssertionError("unreachable")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def _jetstream_answers(url: str) -> bool:
    try:
        nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0, allow_reconnect=False)
    except (OSError, TimeoutError, nats.errors.Error):
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except (OSError, TimeoutError, nats.errors.Error):
        return False
    finally:
        await nc.close()
