"""EmbeddedServers: real NATS (JetStream), PostgreSQL and Redis from wheels, started, restarted and stopped."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
import redis.asyncio as aioredis

import infra.stack.servers
from infra.stack.servers import SERVER_NAMES, EmbeddedServers, ServerAddresses, ServerName, ServerStartError, free_port

SYSTEM_PORTS = {4222, 5432, 6379}


def new_data_dir() -> Path:
    # Not pytest's tmp_path: under root its base (/tmp/pytest-of-root) is 0700, which the unprivileged account
    # PostgreSQL runs as cannot traverse. mkdtemp's directory is 0700 too, but it is the stack's own to open up.
    return Path(tempfile.mkdtemp(prefix="shipskip-servers-test-"))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = new_data_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedServers]:
    path = new_data_dir()
    try:
        with EmbeddedServers(path) as servers:
            yield servers
    finally:
        shutil.rmtree(path, ignore_errors=True)


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def check_all_answer(addresses: ServerAddresses) -> None:
    nc = await nats.connect(addresses.nats_url, allow_reconnect=False)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()

    conn = await asyncpg.connect(addresses.database_url)
    try:
        assert await conn.fetchval("select 1") == 1
        assert await conn.fetchval("select current_database()") == "shipskip"
    finally:
        await conn.close()

    client = aioredis.Redis.from_url(addresses.redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_ports_are_free_local_ones_never_the_system_servers(stack: EmbeddedServers) -> None:
    addresses = stack.addresses
    urls = (addresses.nats_url, addresses.database_url, addresses.redis_url)
    assert [urlsplit(url).scheme for url in urls] == ["nats", "postgresql", "redis"]
    assert all(urlsplit(url).hostname == "127.0.0.1" for url in urls)
    ports = {port_of(url) for url in urls}
    assert len(ports) == 3
    assert not ports & SYSTEM_PORTS
    assert addresses.database_url.endswith("/shipskip")
    assert free_port() not in SYSTEM_PORTS | ports


def test_all_three_servers_answer(stack: EmbeddedServers) -> None:
    asyncio.run(check_all_answer(stack.addresses))


async def write_row_and_message(addresses: ServerAddresses) -> None:
    conn = await asyncpg.connect(addresses.database_url)
    try:
        await conn.execute("create table kept (id int primary key, note text not null)")
        await conn.execute("insert into kept values (1, 'survives a restart')")
    finally:
        await conn.close()
    nc = await nats.connect(addresses.nats_url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"survives too")
    finally:
        await nc.close()


async def read_row_and_message(addresses: ServerAddresses) -> tuple[str, bytes]:
    conn = await asyncpg.connect(addresses.database_url)
    try:
        note: str = await conn.fetchval("select note from kept where id = 1")
    finally:
        await conn.close()
    nc = await nats.connect(addresses.nats_url, allow_reconnect=False)
    try:
        message = await nc.jetstream().get_msg("KEPT", 1)
        assert message.data is not None
        return note, message.data
    finally:
        await nc.close()


def test_data_survives_restarting_the_whole_stack(data_dir: Path) -> None:
    with EmbeddedServers(data_dir) as first:
        asyncio.run(write_row_and_message(first.addresses))
    assert not any(first.is_running(name) for name in SERVER_NAMES)

    with EmbeddedServers(data_dir) as second:
        assert asyncio.run(read_row_and_message(second.addresses)) == ("survives a restart", b"survives too")
    # The cluster was reused, not initialised again.
    assert (data_dir / "logs" / "postgres.log").read_text().count("initdb") == 1


@pytest.mark.parametrize("name", SERVER_NAMES)
def test_one_server_restarts_on_the_same_port(stack: EmbeddedServers, name: ServerName) -> None:
    before = stack.addresses
    old_pid = stack.pid(name)
    assert old_pid is not None
    port = port_of({"nats": before.nats_url, "postgres": before.database_url, "redis": before.redis_url}[name])

    stack.stop_server(name)
    assert not stack.is_running(name)
    assert stack.pid(name) is None
    assert not alive(old_pid)
    assert not accepts(port)
    assert all(stack.is_running(other) for other in SERVER_NAMES if other != name)
    stack.stop_server(name)  # already stopped: a no-op

    stack.start_server(name)
    assert stack.addresses == before
    assert stack.pid(name) not in (None, old_pid)
    asyncio.run(check_all_answer(stack.addresses))


def test_stop_leaves_nothing_running(data_dir: Path) -> None:
    servers = EmbeddedServers(data_dir)
    addresses = servers.start()
    pids = [pid for name in SERVER_NAMES if (pid := servers.pid(name)) is not None]
    assert len(pids) == 3

    async def stop_with_a_session_open() -> int:
        # An open session must not hold up PostgreSQL's shutdown, and its backend must go too.
        conn = await asyncpg.connect(addresses.database_url)
        backend: int = await conn.fetchval("select pg_backend_pid()")
        servers.stop()
        conn.terminate()
        return backend

    backend = asyncio.run(stop_with_a_session_open())
    for pid in [*pids, backend]:
        assert not alive(pid), pid
    for pid in pids:  # each server led its own process group; nothing of any group is left
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not any(servers.is_running(name) for name in SERVER_NAMES)
    assert not any(accepts(port_of(url)) for url in (addresses.nats_url, addresses.database_url, addresses.redis_url))
    servers.stop()  # idempotent


def test_a_server_failing_to_start_reports_its_log_and_stops_the_others(data_dir: Path) -> None:
    # A cluster directory from a "future" PostgreSQL: initdb is skipped and postgres refuses to start.
    pgdata = data_dir / "postgres"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("99\n")
    servers = EmbeddedServers(data_dir)
    with pytest.raises(ServerStartError, match="postgres exited") as failure:
        servers.start()
    assert "postgresql.conf" in str(failure.value)  # the tail of postgres.log says what is missing
    assert not any(servers.is_running(name) for name in SERVER_NAMES)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_root_keeps_the_cluster_elsewhere_when_the_postgres_account_cannot_reach_the_data_dir() -> None:
    outside = new_data_dir()  # 0700 and not the stack's (a checkout under /root): it must not be opened up
    data_dir = outside / "stack"
    try:

        async def count_rows(database_url: str, add: bool) -> int:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute("create table if not exists kept (n int)")
                if add:
                    await conn.execute("insert into kept values (1)")
                return int(await conn.fetchval("select count(*) from kept"))
            finally:
                await conn.close()

        for add, expected in ((True, 1), (False, 1)):  # a second start finds the data
            servers = EmbeddedServers(data_dir)
            try:
                servers.start_server("postgres")
                url = servers.addresses.database_url
                assert asyncio.run(count_rows(url, add)) == expected
            finally:
                servers.stop()
        assert outside.stat().st_mode & 0o777 == 0o700
        link = data_dir / "postgres"
        assert link.is_symlink()
        home = link.resolve().parent
        link.unlink()  # as `make clean` removes .shipskip: the cluster starts afresh
        servers = EmbeddedServers(data_dir)
        try:
            servers.start_server("postgres")
            url = servers.addresses.database_url
            assert asyncio.run(count_rows(url, False)) == 0
        finally:
            servers.stop()
        shutil.rmtree(home, ignore_errors=True)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another account")
def test_root_runs_postgres_from_a_venv_the_postgres_account_cannot_reach(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a clone into `mktemp -d` does: the wheel's install sits below a 0700 folder that is not the stack's.
    hidden = new_data_dir()
    wheel_bin = infra.stack.servers.postgres_bin_dir()
    site = wheel_bin.parent.parent.parent
    shutil.copytree(site / "pgserver" / "pginstall", hidden / "site" / "pgserver" / "pginstall", symlinks=True)
    shutil.copytree(site / "pgserver.libs", hidden / "site" / "pgserver.libs", symlinks=True)
    hidden_bin = hidden / "site" / "pgserver" / "pginstall" / "bin"
    monkeypatch.setattr(infra.stack.servers, "postgres_bin_dir", lambda: hidden_bin)
    account = infra.stack.servers._postgres_account()
    assert account is not None
    reachable = infra.stack.servers.reachable_postgres_bin_dir(hidden_bin, account)
    try:
        assert reachable != hidden_bin
        assert hidden.stat().st_mode & 0o777 == 0o700  # the user's folder is left as it was
        servers = EmbeddedServers(data_dir)
        try:
            servers.start_server("postgres")
            port = servers._require_ports()["postgres"]

            async def answer() -> int:
                conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/shipskip")
                try:
                    return int(await conn.fetchval("select 41 + 1"))
                finally:
                    await conn.close()

            assert asyncio.run(answer()) == 42
            assert f"{reachable}/postgres" in Path(f"/proc/{servers.pid('postgres')}/cmdline").read_bytes().decode()
        finally:
            servers.stop()
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        shutil.rmtree(reachable.parent.parent.parent, ignore_errors=True)


def test_a_hung_server_is_killed_with_its_whole_process_group(
    stack: EmbeddedServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infra.stack.servers, "STOP_TIMEOUT_S", 0.5)
    postmaster = stack.pid("postgres")
    assert postmaster is not None

    async def hang_postgres_then_stop() -> int:
        conn = await asyncpg.connect(stack.addresses.database_url)
        backend: int = await conn.fetchval("select pg_backend_pid()")
        # A stopped postmaster ignores the shutdown request: only the SIGKILL fallback can end it.
        os.kill(postmaster, signal.SIGSTOP)
        stack.stop_server("postgres")
        conn.terminate()
        return backend

    backend = asyncio.run(hang_postgres_then_stop())
    assert not alive(postmaster)
    assert not alive(backend)  # a backend does not outlive its killed postmaster
    stack.start_server("postgres")  # crash recovery on the same data
    asyncio.run(check_all_answer(stack.addresses))


ORPHAN_SCRIPT = """
import sys
from pathlib import Path
from infra.stack.servers import SERVER_NAMES, EmbeddedServers
servers = EmbeddedServers(Path(sys.argv[1]))
servers.start()
print(*[servers.pid(name) for name in SERVER_NAMES], flush=True)
# exits without stop(): the atexit handler must stop the servers
"""


def test_servers_are_stopped_when_the_parent_exits_without_stop(data_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 3
    assert not any(alive(pid) for pid in pids)
