"""The day key for client-address hashes, shared by every copy of the votes service through Redis.

The first copy to need a day's key offers a random one with SET NX (kept two days, then gone for good); every
copy adopts whatever Redis holds and caches it, checking again once a minute (a Redis that lost the key gets the
cached one back). So a client address hashes alike in all copies for one UTC day, which is what the abuse
analysis groups by. While Redis is unreachable a copy hashes under a key of its own, and adopts the shared one
as soon as Redis is back.
"""

import asyncio
import time

from redis.asyncio import Redis

from services.votes.identity import LocalDayKeys
from services.votes.redis_link import RedisLink

KEY_TTL_S = 2 * 86400
RECHECK_S = 60.0

_OFFER = """
redis.call("SET", KEYS[1], ARGV[1], "NX", "EX", ARGV[2])
return redis.call("GET", KEYS[1])
"""


def day_key_name(day: str) -> str:
    return f"shipskip:client-day-key:{day}"


class SharedDayKeys(LocalDayKeys):
    def __init__(self, link: RedisLink) -> None:
        super().__init__()
        self._link = link
        self._offer = link.client.register_script(_OFFER)
        self._check_at: dict[str, float] = {}
        self._syncing: dict[str, asyncio.Task[None]] = {}

    async def ensure(self, day: str) -> None:
        """Make ``key(day)`` the shared key (at most one Redis call a minute; none on most requests)."""
        check_at = self._check_at.get(day)  # set only while the cached key is the shared one
        if check_at is not None and time.monotonic() < check_at:
            return
        if not self._link.up:
            self.key(day)
            return
        task = self._syncing.get(day)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._sync(day))
            self._syncing[day] = task
            task.add_done_callback(lambda _: self._syncing.pop(day, None))
        # Shielded: one caller giving up must not cancel the sync the others wait on.
        await asyncio.shield(task)

    async def _sync(self, day: str) -> None:
        candidate = self.key(day)

        async def offer(client: Redis) -> bytes:
            found: bytes = await self._offer(keys=[day_key_name(day)], args=[candidate, KEY_TTL_S], client=client)
            return found

        shared = await self._link.run(offer)
        if shared is None:
            return  # the link is down now: this key until it is back, then the shared one
        self.set(day, shared)
        self._check_at = {d: t for d, t in self._check_at.items() if self.known(d)}
        self._check_at[day] = time.monotonic() + RECHECK_S
