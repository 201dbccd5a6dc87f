"""The kinds of Redis the votes service may be given (``redis_target``, a fixture of tests/integration/conftest.py,
runs a test on each): the suite's plain server, the wheel's with a password, the same as an ACL user, and Debian's
over TLS with a password (the servers are session fixtures of tests/conftest.py)."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from infra.stack.secured_redis import SecuredRedis
from services.votes.redis_link import RedisLink

ACL_USERS = {"votes": "test-acl-password"}


@dataclass(frozen=True)
class RedisTarget:
    url: str
    ca_file: str | None = None

    def link(self, timeout_s: float = 2.0, pool_size: int = 4) -> RedisLink:
        return RedisLink(self.url, timeout_s=timeout_s, pool_size=pool_size, ca_file=self.ca_file)


def _secured(server: SecuredRedis, username: str = "", password: str | None = None) -> RedisTarget:
    url = server.url_for(username, server.password if password is None else password)
    return RedisTarget(url, str(server.tls.ca) if server.tls else None)


TARGETS: dict[str, Callable[[pytest.FixtureRequest], RedisTarget]] = {
    "plain": lambda request: RedisTarget(request.getfixturevalue("servers").redis_url),
    "password": lambda request: _secured(request.getfixturevalue("password_redis")),
    "acl-user": lambda request: _secured(request.getfixturevalue("password_redis"), "votes", ACL_USERS["votes"]),
    "tls+password": lambda request: _secured(request.getfixturevalue("tls_redis")),
}
