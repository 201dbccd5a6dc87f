"""The admissions of one event-loop turn in one Redis call (services/votes/redis_batch.py, admission.py), on real
Redis servers.

Each request must get its own answer however many share a call, on every kind of Redis (plain, password, ACL user,
TLS); a call that fails must fail the way a single redis-py command would, so that ``RedisLink`` falls back to
per-process limits as before; and no caller may ever get another's reply.
"""

import asyncio
import hashlib
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from redis import exceptions as redis_errors

from infra.stack.secured_redis import SecuredRedis
from infra.stack.servers import ServerAddresses
from services.votes import admission
from services.votes.admission import Claim, Gate, Outcome, ballot_key
from services.votes.limits import Limit
from services.votes.redis_batch import RedisBatch
from services.votes.redis_link import RedisLink
from tests.redis_targets import RedisTarget
from tests.tls_certs import make_tls_files

LIMIT = Limit("voter", 1000, 1, 1000)
ADMISSION_SHA = hashlib.sha1((Path(admission.__file__).parent / "admission.lua").read_bytes()).hexdigest()  # noqa: S324


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.05)


def _link(servers: ServerAddresses, timeout_s: float = 2.0) -> RedisLink:
    return RedisLink(servers.redis_url, timeout_s=timeout_s, pool_size=64)


async def _stats(link: RedisLink) -> tuple[int, int]:
    """Connections Redis accepted so far, and script calls (EVALSHA) it ran."""
    stats = await link.client.info("stats")
    commands = await link.client.info("commandstats")
    return int(stats["total_connections_received"]), int(commands.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_the_admissions_of_one_turn_go_in_one_call_and_each_gets_its_own_answer(
    redis_target: RedisTarget,
) -> None:
    link = redis_target.link(pool_size=64)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600, forgotten_ttl_s=600)
    keys = [ballot_key(secrets.token_hex(8), "a-vs-b", "a") for _ in range(300)]
    try:
        # Half the voters already said "ship": telling them apart needs each reply to reach its own caller.
        for key in keys[::2]:
            await link.client.set(key, "ship", ex=600)
        await gate.admit(Claim(ballot_key=keys[0], ballot="ship"))  # Redis has the script from here on
        connections, calls = await _stats(link)
        claims = [Claim(ballot_key=key, ballot="ship") for key in keys[:150]]
        claims += [Claim(limits=[(LIMIT, key)], ballot_key=key, ballot="ship") for key in keys[150:]]
        admissions = await asyncio.gather(*(gate.admit(claim) for claim in claims))
        # One script call on one connection (redis-py alone would make 300 calls, on up to 64 connections).
        assert await _stats(link) == (connections, calls + 1)
        assert [a.outcome for a in admissions] == [Outcome.UNCHANGED, Outcome.PROCEED] * 150
        assert all(a.shared for a in admissions)
        assert [len(a.states) for a in admissions] == [0] * 150 + [1] * 150
        assert await link.client.mget(keys) == [b"ship"] * 300
    finally:
        await link.client.delete(*keys)
        await link.close()


async def test_a_request_whose_key_holds_something_else_fails_alone(servers: ServerAddresses) -> None:
    link = _link(servers)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600, forgotten_ttl_s=600)
    keys = [ballot_key(secrets.token_hex(8), "a-vs-b", "a") for _ in range(5)]
    try:
        await link.client.hset(keys[2], "not", "a ballot")  # SET ... GET on it is a WRONGTYPE error
        admissions = await asyncio.gather(*(gate.admit(Claim(ballot_key=key, ballot="skip")) for key in keys))
    finally:
        await link.client.delete(*keys)
        await link.close()
    # The others were decided by Redis; that one's error put the link down (as any Redis error does), and the
    # process decided it.
    assert [(a.outcome, a.shared) for a in admissions] == [(Outcome.PROCEED, True)] * 2 + [(Outcome.PROCEED, False)] + [
        (Outcome.PROCEED, True)
    ] * 2
    assert not link.up


async def test_a_script_redis_no_longer_holds_is_loaded_again(redis_target: RedisTarget) -> None:
    link = redis_target.link()
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600, forgotten_ttl_s=600)
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


async def test_a_call_not_answered_in_time_leaves_its_requests_to_the_process_until_redis_answers(
    servers: ServerAddresses,
) -> None:
    link = _link(servers, timeout_s=0.2)
    admin = _link(servers)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600, forgotten_ttl_s=600)
    keys = [ballot_key(secrets.token_hex(8), "a-vs-b", "a") for _ in range(10)]
    try:
        await gate.admit(Claim(ballot_key=keys[0], ballot="ship"))
        await admin.client.client_pause(1000, all=False)  # write commands (scripts too) wait a second
        paused = await asyncio.gather(*(gate.admit(Claim(ballot_key=key, ballot="skip")) for key in keys))
        assert [(a.outcome, a.shared) for a in paused] == [(Outcome.PROCEED, False)] * 10
        assert not link.up
        async with asyncio.timeout(10.0):
            await _until(lambda: link.up)  # the watcher's ping once the pause is over
        again = await gate.admit(Claim(ballot_key=keys[1], ballot="ship"))
        assert (again.outcome, again.shared) == (Outcome.PROCEED, True)
    finally:
        await admin.client.client_unpause()
        await admin.client.delete(*keys)
        await admin.close()
        await link.close()


async def _mget(link: RedisLink, keys: Sequence[str]) -> list[bytes | None]:
    return [value if not isinstance(value, str) else value.encode() for value in await link.client.mget(keys)]


async def test_a_cancelled_caller_leaves_the_others_their_replies(servers: ServerAddresses) -> None:
    link = _link(servers)
    batch: RedisBatch[str, bytes | None] = RedisBatch(lambda keys: _mget(link, keys), max_items=100)
    prefix = secrets.token_hex(4)
    try:
        await link.client.mset({f"{prefix}:{i}": f"value {i}" for i in range(10)})
        tasks = [asyncio.ensure_future(batch.submit(f"{prefix}:{i}")) for i in range(10)]
        await asyncio.sleep(0)
        tasks[3].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[3], asyncio.CancelledError)
        assert [r for i, r in enumerate(results) if i != 3] == [f"value {i}".encode() for i in range(10) if i != 3]
        assert await batch.submit(f"{prefix}:0") == b"value 0"
    finally:
        await link.client.delete(*(f"{prefix}:{i}" for i in range(10)))
        await link.close()


async def test_no_call_carries_more_than_max_items(servers: ServerAddresses) -> None:
    link = _link(servers)
    sizes: list[int] = []

    async def send(keys: list[str]) -> list[bytes | None]:
        sizes.append(len(keys))
        return await _mget(link, keys)

    batch: RedisBatch[str, bytes | None] = RedisBatch(send, max_items=500)
    try:
        replies = await asyncio.gather(*(batch.submit(f"missing:{i}") for i in range(1200)))
    finally:
        await link.close()
    assert replies == [None] * 1200
    assert sizes == [500, 500, 200]


async def test_closing_fails_what_waits_with_a_connection_error(servers: ServerAddresses) -> None:
    link = _link(servers)
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600, forgotten_ttl_s=600)
    batch: RedisBatch[str, bytes | None] = RedisBatch(lambda keys: _mget(link, keys), max_items=100)
    link.on_close(batch.close)
    waiting = asyncio.ensure_future(batch.submit("never sent"))
    await asyncio.sleep(0)  # queued; the batch would go out on the next turn
    await link.close()
    with pytest.raises(redis_errors.ConnectionError):
        await waiting
    # A gate's admissions after closing: not sent, decided by the process.
    assert (await gate.admit(Claim(ballot_key="shipskip:ballot:v:a-vs-b:a", ballot="ship"))).shared is False
    # Not taken for Redis going down: a closed link starts no watcher, whose pings would open connections that
    # nobody closes (they were left to the collector, with a ResourceWarning in a later test).
    assert link.up


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
    gate = Gate(link, record_ttl_s=60, ballot_ttl_s=600, forgotten_ttl_s=600)
    strict = Limit("voter", 1, 3600, 1)
    try:
        first = await gate.admit(Claim(limits=[(strict, "v")], ballot_key="shipskip:ballot:v:a-vs-b:a", ballot="ship"))
        second = await gate.admit(Claim(limits=[(strict, "v")], ballot_key="shipskip:ballot:v:a-vs-b:a", ballot="skip"))
    finally:
        await link.close()
    assert (first.outcome, first.shared) == (Outcome.PROCEED, False)
    assert (second.outcome, second.shared) == (Outcome.LIMITED, False)  # counted in this process
    assert not link.up
