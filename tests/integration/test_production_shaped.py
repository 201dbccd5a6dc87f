"""The pipeline as production runs it: NATS over TLS (a CA of the test's own) with logins, Redis with a password.

A server set of this module's own (``EmbeddedServers`` with ``NatsSecurity`` and a Redis password): a vote goes in
through the votes API, is folded by the projector and comes out counted once on the read API; ``shipskip verify``
and ``shipskip rebuild`` read the stream over TLS. Every process connects through the one ``connect``
(services/shared/jetstream.py); the servers refuse a client without TLS or without a login, so passing here means
each process used them. An nkey login (SHIPSKIP_NATS_NKEY_SEED) and a .creds login (SHIPSKIP_NATS_CREDS, a server in
operator mode) run the publisher and the replay.
"""

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import nkeys
import pytest
import redis.asyncio
import redis.exceptions

from contracts.events import VoteCast
from contracts.subjects import VOTES_STREAM
from infra.stack.secured_redis import TlsFiles
from infra.stack.servers import EmbeddedServers, NatsSecurity, free_port, nats_server_path
from services.shared.config import NatsSettings
from services.shared.event_ids import new_event_id
from services.shared.jetstream import connect, ensure_votes_stream
from services.tally.rebuild.replay import StreamReplay
from services.tally.store import StreamRecord
from services.votes.publisher import VotePublisher
from tests.integration.tls_material import new_nkey, operator_mode, public_key, seed
from tests.support import Pipeline, new_voter, run_cli, running_pipeline, send_vote, wait_until
from tests.tls_certs import make_tls_files

USER, PASSWORD = "shipskip", "nats-test-password"
REDIS_PASSWORD = "redis-test-password"
COMPARISON = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"


class SecureStack:
    def __init__(self, folder: Path, tls: TlsFiles, nkey_seed_file: Path, nkey_public: str) -> None:
        self.folder = folder
        self.tls = tls
        self.nkey_seed_file = nkey_seed_file
        security = NatsSecurity(tls.cert, tls.key, tls.ca, users=((USER, PASSWORD),), nkeys=(nkey_public,))
        self.servers = EmbeddedServers(folder / "servers", nats_security=security, redis_password=REDIS_PASSWORD)


@pytest.fixture(scope="module")
def secure() -> Iterator[SecureStack]:
    # mkdtemp, not tmp_path: under root, pytest's 0700 base folder would hide the data from the Postgres user.
    folder = Path(tempfile.mkdtemp(prefix="shipskip-secure-"))
    try:
        tls = make_tls_files(folder)
        user = new_nkey(nkeys.PREFIX_BYTE_USER)
        seed_file = folder / "user.nk"
        seed_file.write_text(seed(user))
        stack = SecureStack(folder, tls, seed_file, public_key(user))
        with stack.servers:
            yield stack
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def secure_pipeline(secure: SecureStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with running_pipeline(secure.servers.addresses, tmp_path_factory.mktemp("secure-logs")) as pipeline:
        yield pipeline


def test_the_servers_refuse_clients_without_tls_or_a_login(secure: SecureStack) -> None:
    addresses = secure.servers.addresses
    port = addresses.nats_url.rpartition(":")[2]

    async def refused(url: str, ca_file: str | None) -> bool:
        try:
            nc = await asyncio.wait_for(
                connect(NatsSettings(url, ca_file=ca_file), "shipskip-test", timeout_s=3), timeout=10
            )
        except ConnectionError:
            return True
        await nc.close()
        return False

    assert asyncio.run(refused(f"tls://{USER}:wrong@127.0.0.1:{port}", addresses.nats_ca_file))
    assert asyncio.run(refused(f"tls://127.0.0.1:{port}", addresses.nats_ca_file))  # no login
    assert asyncio.run(refused(addresses.nats_url, None))  # a CA the client does not trust

    async def redis_refuses_without_password() -> bool:
        client = redis.asyncio.Redis.from_url(addresses.redis_url.replace(f":{REDIS_PASSWORD}@", ""))
        try:
            await client.ping()
        except redis.exceptions.AuthenticationError:
            return True
        finally:
            await client.aclose()
        return False

    assert asyncio.run(redis_refuses_without_password())


def test_a_vote_goes_in_is_folded_and_comes_out_counted_once(secure_pipeline: Pipeline) -> None:
    with httpx.Client(timeout=10) as client:
        health = client.get(secure_pipeline.votes_url + "/healthz").json()
        assert health["limits"] == "shared", health  # Redis reached with its password
        ready = client.get(secure_pipeline.votes_url + "/readyz")
        assert ready.status_code == 200, ready.text
        token = new_voter(client, secure_pipeline.votes_url)
        key = {"Idempotency-Key": "k1"}
        answer = send_vote(client, secure_pipeline.votes_url, token, "ship", COMPARISON, TOOL, key)
        assert answer.status_code == 202, answer.text
        again = send_vote(client, secure_pipeline.votes_url, token, "ship", COMPARISON, TOOL, key)
        assert again.status_code == 202, again.text
        assert again.json()["event_id"] == answer.json()["event_id"]

        wait_until(lambda: _ship_count(secure_pipeline) == 1, timeout=30)


def test_verify_and_rebuild_read_the_stream_over_tls(secure_pipeline: Pipeline) -> None:
    wait_until(lambda: _ship_count(secure_pipeline) == 1, timeout=30)  # the vote of the test before
    verified = run_cli(secure_pipeline.env, "verify")
    assert verified.returncode == 0, verified.stderr
    assert "0 differences" in verified.stdout, verified.stdout
    rebuilt = run_cli(secure_pipeline.env, "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt 1 event in" in rebuilt.stdout, rebuilt.stdout
    assert _ship_count(secure_pipeline) == 1


def _ship_count(pipeline: Pipeline) -> int:
    figures = httpx.get(f"{pipeline.read_url}/v1/comparisons/{COMPARISON}/community", timeout=10).json()
    return int({tool["tool_id"]: tool["ship"] for tool in figures["tools"]}[TOOL])


def test_an_nkey_login_publishes_and_replays(secure: SecureStack, secure_pipeline: Pipeline) -> None:
    addresses = secure.servers.addresses
    port = addresses.nats_url.rpartition(":")[2]
    settings = NatsSettings(
        f"tls://127.0.0.1:{port}", nkey_seed_file=str(secure.nkey_seed_file), ca_file=addresses.nats_ca_file
    )
    asyncio.run(_publish_and_replay(settings))


def test_a_creds_login_to_a_server_in_operator_mode_publishes_and_replays(secure: SecureStack, tmp_path: Path) -> None:
    mode = operator_mode()
    creds = tmp_path / "user.creds"
    creds.write_text(mode.creds)
    config = tmp_path / "operator.conf"
    tls = secure.tls
    config.write_text(mode.config + f'tls {{\n  cert_file: "{tls.cert}"\n  key_file: "{tls.key}"\n}}\n')
    port = free_port()
    store = tmp_path / "jetstream"
    command = [str(nats_server_path()), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store), "-c", str(config)]
    log = (tmp_path / "nats.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "GOMAXPROCS": "1"})
    try:
        wait_until(lambda: server.poll() is not None or _accepts(port), timeout=20)
        assert server.poll() is None, (tmp_path / "nats.log").read_text()
        settings = NatsSettings(f"tls://127.0.0.1:{port}", creds_file=str(creds), ca_file=str(tls.ca))
        asyncio.run(_publish_and_replay(settings))
        # Without the creds the same server refuses.
        assert asyncio.run(_refused(msgspec.structs.replace(settings, creds_file=None)))
    finally:
        server.terminate()
        server.wait(15)
        log.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


async def _refused(settings: NatsSettings) -> bool:
    try:
        nc = await connect(settings, "shipskip-test", timeout_s=3)
    except ConnectionError:
        return True
    await nc.close()
    return False


async def _publish_and_replay(settings: NatsSettings) -> None:
    """The vote publisher and the replay, production's code, on a connection made with ``settings``."""
    nc = await connect(settings, "shipskip-test", timeout_s=20)
    try:
        await ensure_votes_stream(nc.jetstream(), 120)
        before = (await nc.jetstream().stream_info(VOTES_STREAM)).state.last_seq or 0
        publisher = VotePublisher(timeout_s=10)
        await publisher.start(settings, "shipskip-test-publishes")
        try:
            vote = VoteCast(new_event_id(), COMPARISON, TOOL, "skip", "voter-" + new_event_id(), datetime.now(UTC))
            assert not await publisher.publish(vote, vote.event_id)
            assert await publisher.publish(vote, vote.event_id)  # the same message id: stored once
        finally:
            await publisher.close()
        folded: list[StreamRecord] = []

        async def take(records: list[StreamRecord]) -> None:
            folded.extend(records)

        replay = StreamReplay(nc)
        await replay.open()
        try:
            await replay.fold_until(before + 1, take)
        finally:
            await replay.close()
        assert [record.seq for record in folded] == list(range(1, before + 2))
        assert vote.event_id.encode() in folded[-1].data
    finally:
        await nc.close()
