"""The votes service on a Redis reached as production reaches it: ``rediss://`` with a password, the CA named by
SHIPSKIP_REDIS_CA_FILE. Votes are accepted and rate-limited through it (limits shared, kept in that Redis), and a
CA file that cannot be used stops the service at start with one line."""

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.stack.processes import ServiceProcess, launch_command
from infra.stack.secured_redis import SecuredRedis
from infra.stack.servers import ServerAddresses, free_port
from services.votes.redis_link import CLIENT_NAME
from tests.support import reset_servers, send_vote, service_env, start_votes_service

LLAMA = "llama-4-scout-vs-windsurf-swe-1"
TOOL = "windsurf-swe-1"


@pytest.fixture(scope="module")
def votes_on_tls_redis(
    servers: ServerAddresses, tls_redis: SecuredRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    asyncio.run(reset_servers(servers))
    assert tls_redis.tls is not None
    process = start_votes_service(
        servers,
        tmp_path_factory.mktemp("votes-tls"),
        SHIPSKIP_REDIS_URL=tls_redis.url,
        SHIPSKIP_REDIS_CA_FILE=str(tls_redis.tls.ca),
        SHIPSKIP_RATE_LIMITS="on",
        SHIPSKIP_LIMIT_VOTES_PER_VOTER="3/1h,3",
    )
    try:
        yield process
    finally:
        process.stop()


def test_votes_are_taken_and_limited_through_redis_over_tls_with_a_password(
    votes_on_tls_redis: ServiceProcess, tls_redis: SecuredRedis
) -> None:
    process = votes_on_tls_redis
    with httpx.Client(timeout=10.0) as client:
        assert client.get(process.url + "/healthz").json()["limits"] == "shared"
        token = client.post(process.url + "/v1/voters").json()["voter_token"]
        answers = [send_vote(client, process.url, token, verdict, LLAMA, TOOL) for verdict in ("ship", "skip") * 2]
        assert [answer.status_code for answer in answers] == [202, 202, 202, 429], [a.text for a in answers]
        assert answers[3].headers["RateLimit-Policy"] == '"voter";q=3;w=3600'
        assert client.get(process.url + "/healthz").json()["limits"] == "shared"
    # The limit was counted in that Redis, by the votes service's own connection, over TLS.
    with tls_redis.client() as redis:
        assert redis.keys("shipskip:rl:voter:*")
        assert redis.keys("shipskip:ballot:*")
        names = [connection["name"] for connection in redis.client_list()]
        assert CLIENT_NAME in names
    assert "Redis unreachable" not in process.log_path.read_text(errors="replace")


@pytest.mark.parametrize(
    ("ca_file", "says"),
    [("/nonexistent/ca.pem", "no such file"), ("README.md", "holds no PEM CA certificate")],
)
def test_a_ca_file_that_cannot_be_used_stops_the_service_with_one_line(
    servers: ServerAddresses, tls_redis: SecuredRedis, ca_file: str, says: str, tmp_path: Path
) -> None:
    ca_path = ca_file if ca_file.startswith("/") else str(Path(__file__).parents[2] / ca_file)
    env = service_env(servers, SHIPSKIP_REDIS_URL=tls_redis.url, SHIPSKIP_REDIS_CA_FILE=ca_path)
    result = subprocess.run(
        launch_command("votes", free_port()),
        env={**_clean_environment(), **env},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    lines = [line for line in result.stdout.decode(errors="replace").splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert "SHIPSKIP_REDIS_CA_FILE" in lines[0]
    assert says in lines[0]


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "GRANIAN_"))}
