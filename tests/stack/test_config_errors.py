"""A wrong or missing setting stops each service's own command at start with one line naming the variable.

The commands are those the stack, the tests and the deployment manifests run (``infra.stack.processes.launch_command``:
``shipskip serve votes|read`` before it becomes granian, ``shipskip projector``), plus ``shipskip up``. No server is
needed: the settings are checked before anything connects, so the addresses below point nowhere.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.stack.processes import launch_command
from infra.stack.servers import free_port
from services.serve import ServiceName
from services.tally.settings import TallySettings

VALID = {
    "SHIPSKIP_NATS_URL": "nats://127.0.0.1:1",
    "SHIPSKIP_DATABASE_URL": "postgresql://shipskip@127.0.0.1:1/shipskip",
    "SHIPSKIP_REDIS_URL": "redis://127.0.0.1:1/0",
    "SHIPSKIP_TOKEN_KEYS": "config-test-signing-key-0123456789",
    "SHIPSKIP_HASH_KEY": "config-test-hash-key-0123456789",
    "SHIPSKIP_STACK_FILE": "/nonexistent/shipskip-stack.json",
}

# Partitioned projectors are built beside this work; their settings are checked here once they exist.
PARTITIONS = pytest.mark.skipif(
    "partitions" not in TallySettings.__struct_fields__, reason="SHIPSKIP_PARTITIONS is not a setting yet"
)

# (service, variable, value or None to leave it unset, what the line must also say)
CASES: list[Any] = [
    ("votes", "SHIPSKIP_TOKEN_KEYS", "short", "shorter than 16"),
    ("votes", "SHIPSKIP_HASH_KEY", None, "not set"),
    ("votes", "SHIPSKIP_HASH_KEY", "first-hash-key-0123456789,second-hash-key-0123456789", "it takes one"),
    ("votes", "SHIPSKIP_PUBLISH_TIMEOUT_S", "soon", "not a number"),
    ("votes", "SHIPSKIP_DUPLICATE_WINDOW_S", "nan", "not a finite number"),
    ("votes", "SHIPSKIP_LIMIT_VOTES_PER_VOTER", "lots", "SHIPSKIP_LIMIT_VOTES_PER_VOTER"),
    ("votes", "SHIPSKIP_CORS_ORIGINS", "https://a.example/path", "not an origin"),
    ("votes", "SHIPSKIP_TRUSTED_PROXIES", "10.0.0.0/33", "not an IP address"),
    ("votes", "SHIPSKIP_COOKIE_SECURE", "maybe", "not a boolean"),
    ("votes", "SHIPSKIP_PUBLIC_READ_API", "read.example.com", "not a base URL"),
    ("votes", "SHIPSKIP_VOTES_PORT", "80800", "out of range"),
    ("votes", "SHIPSKIP_REDIS_URL", "http://127.0.0.1:6379", "must start with redis://"),
    ("votes", "SHIPSKIP_REDIS_CA_FILE", "/etc/ssl/certs/ca-certificates.crt", "does not start with rediss://"),
    ("read", "SHIPSKIP_NATS_URL", None, "not set"),
    ("read", "SHIPSKIP_DATABASE_URL", "mysql://127.0.0.1/shipskip", "must start with postgresql://"),
    ("read", "SHIPSKIP_MIN_BALLOTS", "ten", "not a whole number"),
    ("read", "SHIPSKIP_ADMIN_TOKEN", "short", "at least 16 characters"),
    ("read", "SHIPSKIP_SSE_MAX_STREAMS", "20000", "GRANIAN_BACKPRESSURE"),
    ("read", "SHIPSKIP_VIEW_RESYNC_S", "-1", "below 0"),
    ("read", "GRANIAN_BACKPRESSURE", "0", "out of range"),
    ("projector", "SHIPSKIP_BATCH_SIZE", "0", "out of range"),
    ("projector", "SHIPSKIP_NATS_URL", "nats://127.0.0.1:1,127.0.0.1:2", "must start with nats://"),
    ("projector", "SHIPSKIP_STREAM_REPLICAS", "7", "out of range"),
    ("projector", "SHIPSKIP_NATS_URL", "ws://127.0.0.1:1", "must start with nats:// or tls://"),
    ("votes", "SHIPSKIP_NATS_CREDS", "/nonexistent/user.creds", "no such file"),
    ("read", "SHIPSKIP_NATS_CA_FILE", "/nonexistent/ca.pem", "no such file"),
    ("projector", "SHIPSKIP_NATS_CERT_FILE", "/etc/passwd", "SHIPSKIP_NATS_KEY_FILE"),
    pytest.param("projector", "SHIPSKIP_PARTITIONS", "0", "out of range", marks=PARTITIONS),
    pytest.param("projector", "SHIPSKIP_PROJECTOR_PARTITIONS", "2", "SHIPSKIP_PARTITIONS", marks=PARTITIONS),
    ("votes", "SHIPSKIP_LOG_FORMAT", "xml", "not one of auto, json, text"),
    ("read", "SHIPSKIP_ACCESS_LOG", "some", "not one of off, errors, all"),
    ("projector", "SHIPSKIP_PROJECTOR_PORT", "70000", "out of range"),
    ("projector", "SHIPSKIP_LOG_LEVEL", "loud", "SHIPSKIP_LOG_LEVEL"),
    ("votes", "SHIPSKIP_VOTES_METRICS_PORT", "0", "one worker only"),
    ("read", "SHIPSKIP_TALLY_METRICS_PORT", "65536", "out of range"),
    ("up", "SHIPSKIP_VOTES_METRICS_PORT", "8080", "public port"),
    ("up", "SHIPSKIP_TALLY_PORT", "http", "not a whole number"),
    ("up", "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS", "20/1w", "SHIPSKIP_LIMIT_TOKENS_PER_ADDRESS"),
    ("up", "SHIPSKIP_MAX_ACK_PENDING", "0", "out of range"),
]


def case_id(case: Any) -> str:
    service, variable, value = (case.values if hasattr(case, "values") else case)[:3]
    return f"{service}-{variable}-{value}"


def clean_environment() -> dict[str, str]:
    """This process's environment without any shipskip or granian setting (the suite may run with some set)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SHIPSKIP_", "GRANIAN_"))}


def command_of(service: str, tmp_path: Path) -> list[str]:
    if service == "up":
        return [sys.executable, "-m", "services.cli", "up", "--workers", "2", "--data", str(tmp_path / "data")]
    name: ServiceName = "votes" if service == "votes" else "read" if service == "read" else "projector"
    return launch_command(name, None if name == "projector" else free_port(), workers=2)


@pytest.mark.parametrize(("service", "variable", "value", "says"), CASES, ids=[case_id(case) for case in CASES])
def test_a_bad_setting_stops_the_service_with_one_line_naming_it(
    service: str, variable: str, value: str | None, says: str, tmp_path: Path
) -> None:
    env = {**clean_environment(), **VALID}
    if value is None:
        env.pop(variable, None)
    else:
        env[variable] = value
    result = subprocess.run(
        command_of(service, tmp_path),
        env=env,
        cwd=tmp_path,  # no .shipskip/stack.json of a checkout to fall back on
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=60,
        check=False,
    )
    output = result.stdout.decode(errors="replace")
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode != 0, output
    assert len(lines) == 1, output
    assert variable in lines[0], output
    assert says in lines[0], output
    assert "Traceback" not in output
    # Nothing was started: the check comes before any server or worker.
    assert not (tmp_path / "data" / "servers").exists()


def test_the_same_values_pass_when_valid(tmp_path: Path) -> None:
    """The baseline the cases above change one variable of is itself valid (else they would prove nothing)."""
    from infra.stack.local import check_settings

    votes_port, read_port = check_settings({**VALID, "SHIPSKIP_VOTES_PORT": "18080", "SHIPSKIP_TALLY_PORT": "18081"})
    assert (votes_port, read_port) == (18080, 18081)
