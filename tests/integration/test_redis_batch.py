"""The admissions of one event-loop turn in one redis-py pipeline (services/votes/redis_batch.py), on real Redis.

Each caller must get its own replies however many share a batch, on every kind of Redis (plain, password, ACL
user, TLS); fail the way redis-py's single commands would, so that ``RedisLink`` falls back to per-process limits
as before; and never leave one caller with another's reply.
"""

import asyncio
import hashlib
import secrets
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline

from infra.stack.secured_redis import SecuredRedis
from infra.stack.servers import ServerAddresses
from services.votes import admission
from services.votes.admission import Claim, Gate, Outcome, ballot_key
from services.votes.limits import Limit
from services.votes.redis_batch import Queue
from services.votes.redis_link import RedisLink
from tests.redis_targets import RedisTarget
from tests.tls_certs import make_tls_files

LIMIT = Limit("voter", 1000, 1, 1000)
ADMISSION_SHA = hashlib.sha1((Path(admission.__file__).parent / "admission.lua").read_bytes()).hexdigest()  # noqa: S324


def _link(servers: ServerAddresses, timeout_s: float = 2.0) -> RedisLink:
    return RedisLink(servers.redis_url, timeout_s=timeout_s, pool_size=64)


def _echo(text: str) -> Queue:
    return lambda pipe: pipe.echo(text)


async def _connections_received(link: RedisLink) -> int:
    stats = await link.client.info("stats")
    return int(stats["total_connections_received"])


async def test_concurrent_admissions_share_one_connection_and_each_get_their_own_answer(
    redis_target: RedisTarget,
) -> None:
    link = redis_target.link(pool_size=64)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600)
    keys = [ballot_key(secrets.token_hex(8), "a-vs-b", "a") for _ in range(300)]
    try:
        # Half the voters already said "ship": telling them apart needs each reply to reach its own caller.
        for key in keys[::2]:
            await link.client.set(key, "ship", ex=600)
        before = await _connections_received(link)
        claims = [Claim(ballot_key=key, ballot="ship") for key in keys[:150]]
        claims += [Claim(limits=[(LIMIT, key)], ballot_key=key, ballot="ship") for key in keys[150:]]
        admissions = await asyncio.gather(*(gate.admit(claim) for claim in claims))
        # One pipeline at a time, so one connection however many wait (redis-py alone would take one per command).
        assert await _connections_received(link) - before <= 1
        assert [a.outcome for a in admissions] == [Outcome.UNCHANGED, Outcome.PROCEED] * 150
        assert all(a.shared for a in admissions)
        assert [len(a.states) for a in admissions] == [0] * 150 + [1] * 150
        assert await link.client.mget(keys) == [b"ship"] * 300
    finally:
        await link.client.delete(*keys)
        await link.close()


async def test_many_commands_in_flight_keep_their_order_and_their_replies(servers: ServerAddresses) -> None:
    link = _link(servers)
    prefix = secrets.token_hex(4)

    def increment(i: int) -> Queue:
        return lambda pipe: pipe.incrby(f"{prefix}:{i % 7}", i)

    def two_commands(pipe: Pipeline) -> None:
        pipe.incrby(f"{prefix}:x", 5)
        pipe.get(f"{prefix}:x")

    try:
        replies = await asyncio.gather(*(link.batch.run(increment(i)) for i in range(700)))
        echoes = await asyncio.gather(*(link.batch.run(_echo(f"reply-{i}")) for i in range(500)))
        two = await link.batch.run(two_commands)
    finally:
        await link.client.delete(*(f"{prefix}:{i}" for i in [*range(7), "x"]))
        await link.close()
    assert echoes == [[f"reply-{i}".encode()] for i in range(500)]
    # Per key the increments ran in the order they were issued: each reply is the running sum.
    sums: dict[int, int] = {}
    for i, (reply,) in enumerate(replies):
        sums[i % 7] = sums.get(i % 7, 0) + i
        assert reply == sums[i % 7]
    assert two == [5, b"5"]  # a caller's several commands, in order


async def test_an_error_reply_fails_only_its_own_caller(servers: ServerAddresses) -> None:
    link = _link(servers)
    key = secrets.token_hex(8)

    def read_then_increment(pipe: Pipeline) -> None:
        pipe.get(key)
        pipe.incr(key)

    try:
        await link.client.set(key, "text")
        results = await asyncio.gather(
            link.batch.run(lambda pipe: pipe.incr(key)),
            link.batch.run(lambda pipe: pipe.get(key)),
            link.batch.run(lambda pipe: pipe.execute_command("NOSUCHCOMMAND")),
            link.batch.run(read_then_increment),
            return_exceptions=True,
        )
    finally:
        await link.client.delete(key)
        await link.close()
    assert isinstance(results[0], redis_errors.ResponseError)
    assert results[1] == [b"text"]
    assert isinstance(results[2], redis_errors.ResponseError)
    assert isinstance(results[3], redis_errors.ResponseError)  # one of its two failed: the caller is told
    assert link.up


async def test_a_script_redis_no_longer_holds_is_loaded_again(redis_target: RedisTarget) -> None:
    link = redis_target.link()
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600)
    keys = [ballot_key(secrets.token_hex(8), "a-vs-b", "a") for _ in range(20)]
    try:
        await gate.admit(Claim(limits=[(LIMIT, keys[0])], ballot_key=keys[0], ballot="ship"))
        await link.client.script_flush()  # as a Redis restarted or flushed
        claims = [Claim(limits=[(LIMIT, key)], ballot_key=key, ballot="skip") for key in keys]
        admissions = await asyncio.gather(*(gate.admit(claim) for claim in claims))
        assert [(a.outcome, a.shared) for a in admissions] == [(Outcome.PROCEED, True)] * 20
        assert await link.client.script_exists(ADMISSION_SHA) == [True]
    finally:
        await link.client.delete(*keys)
        await link.close()
    assert link.up


async def test_a_batch_without_reply_in_time_fails_its_callers_and_the_next_one_goes_through(
    servers: ServerAddresses,
) -> None:
    link = _link(servers, timeout_s=0.2)
    try:
        # Redis answers the BLPOP only after 5 s: the whole batch waits on it, and times out.
        blocked = link.batch.run(lambda pipe: pipe.blpop([secrets.token_hex(8)], timeout=5))
        behind = link.batch.run(lambda pipe: pipe.echo("behind it"))
        results = await asyncio.gather(blocked, behind, return_exceptions=True)
        assert all(isinstance(result, redis_errors.TimeoutError) for result in results), results
        # A connection of its own (the late BLPOP reply can never be taken for this one's).
        assert await link.batch.run(lambda pipe: pipe.echo("after")) == [b"after"]
    finally:
        await link.close()


async def test_a_cancelled_caller_leaves_the_others_their_replies(servers: ServerAddresses) -> None:
    link = _link(servers)
    try:
        tasks = [asyncio.ensure_future(link.batch.run(_echo(f"r{i}"))) for i in range(10)]
        await asyncio.sleep(0)
        tasks[3].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        assert [r for i, r in enumerate(results) if i != 3] == [[f"r{i}".encode()] for i in range(10) if i != 3]
        assert await link.batch.run(lambda pipe: pipe.echo("next")) == [b"next"]
    finally:
        await link.close()


async def test_closing_fails_what_waits_with_a_connection_error(servers: ServerAddresses) -> None:
    link = _link(servers)
    waiting = asyncio.ensure_future(link.batch.run(lambda pipe: pipe.echo("never sent")))
    await asyncio.sleep(0)  # queued; the batch would go out on the next turn
    await link.close()
    with pytest.raises(redis_errors.ConnectionError):
        await waiting


@pytest.mark.parametrize("wrong", ["password", "certificate authority"])
async def test_a_redis_that_refuses_the_link_is_unreachable_to_it_and_admissions_go_on_per_process(
    request: pytest.FixtureRequest, wrong: str, tmp_path: Path
) -> None:
    if wrong == "password":
        server: SecuredRedis = request.getfixturevalue("password_redis")
        link = RedisLink(server.url_for("", "not-the-password"), timeout_s=1.0, pool_size=4)
    else:
        server = request.getfixturevalue("tls_redis")
        other_ca = make_tls_files(tmp_path, ca_name="another CA").ca  # not the one that signed the server's
        link = RedisLink(server.url, timeout_s=1.0, pool_size=4, ca_file=str(other_ca))
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600)
    strict = Limit("voter", 1, 3600, 1)
    try:
        first = await gate.admit(Claim(limits=[(strict, "v")], ballot_key="shipskip:ballot:v:a-vs-b:a", ballot="ship"))
        second = await gate.admit(Claim(limits=[(strict, "v")], ballot_key="shipskip:ballot:v:a-vs-b:a", ballot="skip"))
    finally:
        await link.close()
    assert (first.outcome, first.shared) == (Outcome.PROCEED, False)
    assert (second.outcome, second.shared) == (Outcome.LIMITED, False)  # counted in this process
    assert not link.up
