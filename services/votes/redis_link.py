"""The votes service's Redis connection, and what happens while Redis cannot be reached.

Redis holds what the copies of the service share: rate-limit counters, idempotency records, the voters' current
ballots and the day key for client-address hashes. None of it is needed to accept a vote durably (the stream
is), so when Redis fails the service carries on without it: ``run`` answers None at once, the failure is logged
once, and a watcher pings Redis until it answers, when everything is shared again.

Everything goes through redis-py's ``client`` (the hot path's admissions of one event-loop turn in one call:
admission.py, redis_batch.py). The URL says where and how: ``redis://``,
``rediss://`` (TLS; ``ca_file`` names the certificate authority to trust instead of the system's), ``unix://``,
with ``user:password@`` when Redis asks for them.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

WATCH_INTERVAL_S = 0.5
CLIENT_NAME = "shipskip-votes"


class RedisLink:
    def __init__(self, url: str, *, timeout_s: float, pool_size: int, ca_file: str | None = None) -> None:
        # Only where TLS is spoken: redis-py's plain connections take no TLS argument.
        tls = {"ssl_ca_certs": ca_file} if ca_file is not None else {}
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            # redis-py's asyncio pool raises past its size; the blocking one waits, but only this long.
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One immediate retry gets past a pooled connection that died with a Redis restart; more would only
            # delay the fallback.
            retry=Retry(NoBackoff(), 1),
            client_name=CLIENT_NAME,  # so an operator's CLIENT LIST tells the votes service's connections
            **tls,
        )
        self.client: Redis = Redis.from_pool(pool)  # owns the pool: closing the client closes it
        self._up = True
        self._watcher: asyncio.Task[None] | None = None
        self._recovery_hooks: list[Callable[[Redis], Awaitable[None]]] = []
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        self._closed = False

    def on_recovery(self, hook: Callable[[Redis], Awaitable[None]]) -> None:
        """Run ``hook`` when Redis answers again, before anything is shared through it."""
        self._recovery_hooks.append(hook)

    def on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` on ``close``, before the connections close (to give up what still waits for them)."""
        self._close_hooks.append(hook)

    @property
    def up(self) -> bool:
        return self._up

    async def run(self, operation: Callable[[Redis], Awaitable[_T]]) -> _T | None:
        """The operation's result, or None (at once while Redis is known to be down, or once closed)."""
        if not self._up or self._closed:
            return None
        try:
            return await operation(self.client)
        except (RedisError, OSError) as exc:
            self._went_down(exc)
            return None

    async def probe(self) -> None:
        """Check the connection now (at start), so an unreachable Redis is reported before the first vote."""
        await self.run(lambda client: client.ping())

    def _went_down(self, exc: BaseException) -> None:
        if not self._up or self._closed:
            return  # a closed link watches nothing: its pings would open connections nobody closes
        self._up = False
        log.warning(
            "Redis unreachable (%s: %s): limits are counted per process and idempotency records are not kept "
            "until it is back",
            type(exc).__name__,
            exc,
        )
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                await self.client.ping()
                for hook in self._recovery_hooks:
                    await hook(self.client)
            except (RedisError, OSError):
                continue
            self._up = True
            log.info("Redis reachable again: limits, idempotency records and ballots are shared again")
            return

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
        for hook in self._close_hooks:
            await hook()
        await self.client.aclose()
