"""What the fault tests share: the session's embedded servers, which they stop, freeze and restart."""

import pytest

from infra.stack.servers import EmbeddedServers


@pytest.fixture(scope="session")
def stack(embedded: EmbeddedServers | None) -> EmbeddedServers:
    """The embedded servers; the test is skipped when the suite was given servers of its own (SHIPSKIP_*_URL)."""
    if embedded is None:
        pytest.skip("stopping or freezing a server needs the embedded servers")
    return embedded
