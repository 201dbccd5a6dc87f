"""One running pipeline (votes API, read API, projector as real processes) per test module."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra.stack.servers import ServerAddresses
from tests.redis_targets import TARGETS, RedisTarget
from tests.support import Pipeline, running_pipeline


@pytest.fixture(scope="module")
def pipeline(servers: ServerAddresses, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    with running_pipeline(servers, log_dir) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


@pytest.fixture(params=list(TARGETS))
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """Each kind of Redis in turn (tests/redis_targets.py)."""
    return TARGETS[request.param](request)
