"""The votes service's coalesced Redis connection (services/votes/redis_pipe.py), against the suite's real Redis.

Each command must get its own reply however many are in flight, fail the way redis-py's would (so that
``RedisLink`` falls back to per-process limits as before), and never leave a later command reading an earlier
one's reply.
"""

import asyncio
import hashlib
import secrets

import pytest
import redis.asyncio
from redis import exceptions as redis_errors

from infra.stack.servers import ServerAddresses
from services.votes.redis_link import RedisLink
from services.votes.redis_pipe import PipeAddress, RedisPipe, pack


def _pipe(servers: ServerAddresses, timeout_s: float = 1.0, db: int = 0) -> RedisPipe:
    link = RedisLink(servers.redis_url.rsplit("/", 1)[0] + f"/{db}", timeout_s=timeout_s, pool_size=2)
    assert link.pipe is not None
    return link.pipe


def test_commands_are_packed_as_resp_arrays() -> None:
    assert pack(("SET", "k", 12, b"\x00v")) == b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n"


def test_the_address_comes_from_the_url() -> None:
    link = RedisLink("redis://:secret@127.0.0.1:7000/3", timeout_s=0.5, pool_size=2)
    assert link.pipe is not None
    assert link.pipe._address == PipeAddress(host="127.0.0.1", port=7000, password="secret", db=3)
    tls = RedisLink("rediss://127.0.0.1:7000/0", timeout_s=0.5, pool_size=2)
    assert tls.pipe is None  # served by redis-py's pool alone


async def test_many_commands_in_flight_each_get_their_own_reply(servers: ServerAddresses) -> None:
    pipe = _pipe(servers)
    prefix = secrets.token_hex(4)
    try:
        replies = await asyncio.gather(*(pipe.execute("INCRBY", f"{prefix}:{i % 7}", i) for i in range(700)))
        echoes = await asyncio.gather(*(pipe.execute("ECHO", f"reply-{i}") for i in range(500)))
    finally:
        pipe.close()
    assert echoes == [f"reply-{i}".encode() for i in range(500)]
    # Per key the increments ran in the order they were issued: each reply is the running sum.
    sums: dict[int, int] = {}
    for i, reply in enumerate(replies):
        sums[i % 7] = sums.get(i % 7, 0) + i
        assert reply == sums[i % 7]


async def test_an_error_reply_fails_only_its_own_command(servers: ServerAddresses) -> None:
    pipe = _pipe(servers)
    key = secrets.token_hex(8)
    try:
        await pipe.execute("SET", key, "text")
        results = await asyncio.gather(
            pipe.execute("INCR", key), pipe.execute("GET", key), pipe.execute("NOSUCHCOMMAND"), return_exceptions=True
        )
    finally:
        pipe.close()
    assert isinstance(results[0], redis_errors.ResponseError)
    assert results[1] == b"text"
    assert isinstance(results[2], redis_errors.ResponseError)


async def test_a_script_redis_does_not_hold_is_sent_whole(servers: ServerAddresses) -> None:
    pipe = _pipe(servers)
    script = f"return {{KEYS[1], ARGV[1], '{secrets.token_hex(4)}'}}"
    sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
    try:
        await pipe.execute("SCRIPT", "FLUSH")
        first = await pipe.run_script(sha, script, ["k"], [7])
        assert await pipe.execute("SCRIPT", "EXISTS", sha) == [1]  # EVAL cached it
        second = await pipe.run_script(sha, script, ["k"], [8])
    finally:
        pipe.close()
    assert first[:2] == [b"k", b"7"]
    assert second[:2] == [b"k", b"8"]


async def test_a_command_without_reply_times_out_and_the_next_one_reconnects(servers: ServerAddresses) -> None:
    pipe = _pipe(servers, timeout_s=0.2)
    try:
        blocked = pipe.execute("BLPOP", secrets.token_hex(8), 5)  # Redis answers this one only after 5 s
        behind = pipe.execute("ECHO", "behind it")
        results = await asyncio.gather(blocked, behind, return_exceptions=True)
        assert all(isinstance(result, redis_errors.TimeoutError) for result in results)
        # A new connection: the late BLPOP reply can never be taken for this one's.
        assert await pipe.execute("ECHO", "after") == b"after"
    finally:
        pipe.close()


async def test_a_lost_connection_fails_what_was_in_flight_then_connects_again(servers: ServerAddresses) -> None:
    pipe = _pipe(servers)
    admin = redis.asyncio.Redis.from_url(servers.redis_url)
    try:
        name = "pipe-" + secrets.token_hex(4)
        await pipe.execute("CLIENT", "SETNAME", name)
        blocked = asyncio.ensure_future(pipe.execute("BLPOP", secrets.token_hex(8), 5))
        await asyncio.sleep(0.1)
        clients = await admin.client_list()
        (pipe_id,) = [client["id"] for client in clients if client["name"] == name]
        await admin.client_kill_filter(_id=pipe_id)
        with pytest.raises(redis_errors.ConnectionError):
            await blocked
        assert await pipe.execute("ECHO", "again") == b"again"
    finally:
        pipe.close()
        await admin.aclose()


async def test_an_unreachable_redis_is_a_connection_error(servers: ServerAddresses) -> None:
    closed = RedisPipe(PipeAddress(host="127.0.0.1", port=1), timeout_s=0.5)
    with pytest.raises(redis_errors.ConnectionError):
        await closed.execute("PING")


async def test_the_url_database_is_selected(servers: ServerAddresses) -> None:
    pipe = _pipe(servers, db=3)
    other = redis.asyncio.Redis.from_url(servers.redis_url.rsplit("/", 1)[0] + "/3")
    key = secrets.token_hex(8)
    try:
        await pipe.execute("SET", key, "in db 3")
        assert await other.get(key) == b"in db 3"
        await other.delete(key)
    finally:
        pipe.close()
        await other.aclose()
