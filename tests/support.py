"""Helpers the tests share: resetting the servers to a known state, running the services, reading back."""

import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from contracts.events import Event, VoteCast, VoteEvent, VoteRetracted, decode_event
from contracts.subjects import CATALOG_BUCKET, VOTES_ALL, VOTES_STREAM
from infra.stack.bootstrap import DEMO_CATALOG, bootstrap
from infra.stack.processes import ServiceProcess, start_service, wait_ready
from infra.stack.servers import ServerAddresses, free_port
from services.serve import ServiceName
from services.shared.jetstream import connect


def service_env(servers: ServerAddresses, **extra: str) -> dict[str, str]:
    env = {
        "SHIPSKIP_NATS_URL": servers.nats_url,
        **({"SHIPSKIP_NATS_CA_FILE": servers.nats_ca_file} if servers.nats_ca_file else {}),
        "SHIPSKIP_DATABASE_URL": servers.database_url,
        "SHIPSKIP_REDIS_URL": servers.redis_url,
        "SHIPSKIP_TOKEN_KEYS": "test-signing-key-" + "a" * 16,
        "SHIPSKIP_HASH_KEY": "test-hash-key-" + "b" * 16,
        "SHIPSKIP_COOKIE_SECURE": "off",
        # Limits are tested on their own (test_abuse_*, which turn them on); elsewhere they would only
        # refuse the many tokens and votes a test sends from 127.0.0.1.
        "SHIPSKIP_RATE_LIMITS": "off",
        # Likewise the limit on failed admin logins (tests/hostile/test_identity_and_errors.py sets its own): the
        # admin tests send many wrong tokens from 127.0.0.1 on purpose.
        "SHIPSKIP_ADMIN_AUTH_FAILURES": "100000",
        # The suite must never read a developer's .shipskip/stack.json.
        "SHIPSKIP_STACK_FILE": "/nonexistent/shipskip-stack.json",
        # Any free port for each process's /metrics: several run at once (and `make run` may hold 8082, 9080, 9081);
        # the stack runner picks one and tells (ServiceProcess.ops_port).
        "SHIPSKIP_PROJECTOR_PORT": "0",
        "SHIPSKIP_VOTES_METRICS_PORT": "0",
        "SHIPSKIP_TALLY_METRICS_PORT": "0",
    }
    env.update(extra)
    return env


async def reset_servers(servers: ServerAddresses, catalog_file: Path | None = DEMO_CATALOG) -> None:
    """Empty the stream, the catalogue and the database, then bootstrap as a first start would."""
    nc = await connect(servers.nats, "shipskip-test")
    try:
        js = nc.jetstream()
        with suppress(NotFoundError):
            await js.delete_stream(VOTES_STREAM)
        with suppress(NotFoundError):
            await js.delete_stream("KV_" + CATALOG_BUCKET)  # the bucket's backing stream
    finally:
        await nc.close()
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute("drop schema public cascade; create schema public")
    finally:
        await conn.close()
    await bootstrap(servers.nats, servers.database_url, catalog_file=catalog_file)


@dataclass
class Pipeline:
    """The three shipskip services as real processes on free ports."""

    servers: ServerAddresses
    env: dict[str, str]
    log_dir: Path
    processes: dict[ServiceName, ServiceProcess] = field(default_factory=dict)
    projector_port: int = 0
    """Where the projector serves /metrics, /healthz and /readyz."""

    @property
    def votes_url(self) -> str:
        return self.processes["votes"].url

    @property
    def read_url(self) -> str:
        return self.processes["read"].url

    @property
    def projector_url(self) -> str:
        return f"http://127.0.0.1:{self.projector_port}"

    @property
    def votes_ops_url(self) -> str:
        """The votes API's ops port: /metrics (and /healthz, /readyz again)."""
        return self.processes["votes"].ops_url

    @property
    def read_ops_url(self) -> str:
        return self.processes["read"].ops_url

    def start(self, name: ServiceName, *, wait: bool = True) -> ServiceProcess:
        """Start ``name``; with ``wait``, return once it serves (else ``wait_ready`` it later)."""
        if name == "projector":
            self.projector_port = free_port()
            env = {**self.env, "SHIPSKIP_PROJECTOR_PORT": str(self.projector_port)}
            self.processes[name] = start_service(name, env, self.log_dir, wait=wait)
        else:
            self.processes[name] = start_service(name, self.env, self.log_dir, free_port(), wait=wait)
        return self.processes[name]

    def start_together(self, names: tuple[ServiceName, ...]) -> None:
        """Start every one of ``names`` at once, then wait until each serves: their start-ups (mostly imports) overlap.

        Nothing in one service's start needs another one running: what each needs is in the servers, bootstrapped
        before (``reset_servers``).
        """
        for name in names:
            self.start(name, wait=False)
        for name in names:
            wait_ready(self.processes[name])

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


@contextmanager
def running_pipeline(servers: ServerAddresses, log_dir: Path, **extra_env: str) -> Iterator[Pipeline]:
    asyncio.run(reset_servers(servers))
    pipeline = Pipeline(servers, service_env(servers, **extra_env), log_dir)
    try:
        pipeline.start_together(("projector", "read", "votes"))
        yield pipeline
    finally:
        pipeline.stop()


def new_voter(client: httpx.Client, votes_url: str, address: str | None = None) -> str:
    """A fresh voter token; ``address`` is sent as X-Forwarded-For (believed from a trusted proxy only)."""
    response = client.post(votes_url + "/v1/voters", headers={"X-Forwarded-For": address} if address else {})
    assert response.status_code == 201, response.text
    token: str = response.json()["voter_token"]
    return token


def wait_until(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def stream_last_seq(servers: ServerAddresses) -> int:
    nc = await connect(servers.nats, "shipskip-test")
    try:
        info = await nc.jetstream().stream_info(VOTES_STREAM)
        return int(info.state.last_seq)
    finally:
        await nc.close()


async def fetch(servers: ServerAddresses, sql: str, *args: object) -> list[asyncpg.Record]:
    """The rows of one query on the suite's database."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def execute(servers: ServerAddresses, sql: str, *args: object) -> None:
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


@contextmanager
def empty_database(servers: ServerAddresses, name: str) -> Iterator[str]:
    """The URL of a new, empty database ``name`` on the suite's Postgres (up, but without shipskip's tables); dropped
    after."""
    asyncio.run(execute(servers, f"drop database if exists {name}"))
    asyncio.run(execute(servers, f"create database {name}"))
    try:
        yield servers.database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(execute(servers, f"drop database if exists {name}"))


async def projected_position(servers: ServerAddresses) -> int:
    """The stream sequence the live projection has folded up to."""
    conn = await asyncpg.connect(servers.database_url)
    try:
        seq = await conn.fetchval("select seq from projection_position where projection = 'tally'")
        return int(seq or 0)
    finally:
        await conn.close()


def random_key() -> str:
    return secrets.token_hex(8)


async def publish_raw(servers: ServerAddresses, messages: list[tuple[str, bytes]], in_flight: int = 512) -> None:
    """Append messages straight to the stream (as a votes service would), many acks in flight, all confirmed."""
    nc = await connect(servers.nats, "shipskip-test")
    try:
        js = nc.jetstream(publish_async_max_pending=in_flight)
        futures = []
        for index, (subject, data) in enumerate(messages):
            futures.append(await js.publish_async(subject, data, headers={"Nats-Msg-Id": f"{index}-{random_key()}"}))
        acks = await asyncio.gather(*futures)
        assert all(not ack.duplicate for ack in acks)
    finally:
        await nc.close()


DEMO_TOOLS = {
    "llama-4-scout-vs-windsurf-swe-1": ("llama-4-scout-fine-tuning-toolkit", "windsurf-swe-1"),
    "smolvlm2-2b-vs-windsurf-swe-1": ("smolvlm2-2b", "windsurf-swe-1"),
}
"""The demo catalogue's comparisons and their two tools each."""


def run_cli_meanwhile(
    env: dict[str, str], work: Callable[[threading.Event], None], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run ``shipskip ARGS`` while ``work(ended)`` runs in a thread; ``ended`` is set once the command is done."""
    ended = threading.Event()
    worker = threading.Thread(target=work, args=(ended,))
    worker.start()
    try:
        return run_cli(env, *args)
    finally:
        ended.set()
        worker.join()


def run_cli(env: dict[str, str], *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run ``shipskip ARGS`` as a separate process, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- abuse protection (tests/integration/test_abuse_*.py) --------------------------------------------------------


async def flush_redis(servers: ServerAddresses) -> None:
    """Forget every rate-limit counter, idempotency record, remembered ballot and day key."""
    client = redis.asyncio.Redis.from_url(servers.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def start_votes_service(servers: ServerAddresses, log_dir: Path, **extra_env: str) -> ServiceProcess:
    """One votes API process alone (no projector, no read API), with the suite's settings and ``extra_env``."""
    return start_service("votes", service_env(servers, **extra_env), log_dir, free_port())


async def read_events(servers: ServerAddresses, first_seq: int = 1) -> list[Event]:
    """Every event in the VOTES stream from ``first_seq`` on, decoded as the projector would."""
    nc = await connect(servers.nats, "shipskip-test")
    try:
        js = nc.jetstream()
        last = (await js.stream_info(VOTES_STREAM)).state.last_seq
        return [decode_event((await js.get_msg(VOTES_STREAM, seq)).data or b"") for seq in range(first_seq, last + 1)]
    finally:
        await nc.close()


async def connect_nats(servers: ServerAddresses) -> NATS:
    """A client of the suite's NATS, or of every node of a cluster (SHIPSKIP_NATS_URL lists them with commas)."""
    return await connect(servers.nats, "shipskip-test", timeout_s=10)


async def stream_events(servers: ServerAddresses) -> list[Event]:
    """Every event of VOTES in order, read fast (an ephemeral consumer, no acks); the stream was reset, so the
    n-th has sequence n."""
    nc = await connect_nats(servers)
    try:
        js = nc.jetstream()
        last = (await js.stream_info(VOTES_STREAM)).state.last_seq or 0
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            filter_subject=VOTES_ALL,
            inactive_threshold=30.0,
            mem_storage=True,
        )
        info = await js.add_consumer(VOTES_STREAM, config)
        subscription = await js.pull_subscribe_bind(consumer=info.name, stream=VOTES_STREAM)
        events: list[Event] = []
        while len(events) < last:
            for message in await subscription.fetch(batch=2000, timeout=10):
                assert message.metadata.sequence.stream == len(events) + 1
                events.append(decode_event(message.data))
        await subscription.unsubscribe()
        return events
    finally:
        await nc.close()


def send_vote(
    client: httpx.Client,
    votes_url: str,
    token: str | None,
    verdict: str | None,
    comparison: str,
    tool: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Cast ``verdict`` on ``tool`` (or retract the ballot when ``verdict`` is None) with the given headers."""
    headers = dict(headers or {})
    if token is not None:
        headers["X-Voter-Token"] = token
    if verdict is None:
        return client.delete(f"{votes_url}/v1/comparisons/{comparison}/votes/{tool}", headers=headers)
    return client.post(
        f"{votes_url}/v1/comparisons/{comparison}/votes", json={"tool_id": tool, "verdict": verdict}, headers=headers
    )


def stream_seq(servers: ServerAddresses) -> int:
    return asyncio.run(stream_last_seq(servers))


def vote_events(servers: ServerAddresses, first_seq: int) -> list[VoteEvent]:
    """The vote events stored from ``first_seq`` on."""
    return [e for e in asyncio.run(read_events(servers, first_seq)) if isinstance(e, VoteCast | VoteRetracted)]
