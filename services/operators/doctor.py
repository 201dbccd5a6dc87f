"""``shipskip doctor``: check the configured servers from where it runs, and say what is wrong and how to fix it.

Each check gives one finding: ``ok``, ``warn`` (works, but worth a look), ``fail`` (something shipskip needs is
missing or wrong) or ``skip`` (could not be checked because an earlier one failed). The command exits 1 when any
check failed, else 0; ``--json`` prints the findings as one object.

- NATS: reachable, its version (2.10 or later: consumers with several filters), JetStream enabled; the VOTES stream
  shaped as services/shared/jetstream.py defines it (subjects, file storage, limits retention, no age or size limit
  that would drop votes, the duplicate window, at least ``SHIPSKIP_STREAM_REPLICAS`` copies); each projector
  partition's consumer as the projector makes it; a catalogue loaded.
- Postgres: reachable, its version (14 or later), every migration of infra/migrations applied, the partition layout
  of the projection (services/tally/layout.py) the one ``SHIPSKIP_PARTITIONS`` names.
- Redis: reachable, version 6.2 or later.
- Clock skew between this host and each server (NATS: the time of its stream-info answer; Postgres: ``now()``;
  Redis: ``TIME``): the projector's lag in seconds compares the server's timestamps with its host's clock.

Every server gets ``TIMEOUT_S`` per step, so a server that is frozen (accepts, never answers) is named, not waited on.
"""

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import redis.asyncio
import redis.exceptions
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.subjects import VOTES_STREAM, VOTES_SUBJECTS
from infra.migrate import MIGRATIONS
from services.operators.failures import OUTAGES
from services.shared.catalog_store import read_catalog
from services.shared.config import ConfigError, Env
from services.shared.jetstream import connect
from services.tally.layout import layout_count, partition_positions
from services.tally.partitions import layout_names
from services.tally.settings import TallySettings

Status = Literal["ok", "warn", "fail", "skip"]

TIMEOUT_S = 5.0
SKEW_WARN_S = 1.0
"""More than this between a server's clock and this host's is worth fixing (NTP)."""
NATS_MINIMUM = (2, 10)
POSTGRES_MINIMUM = 14
REDIS_MINIMUM = (6, 2)

_T = TypeVar("_T")
UNREADABLE: tuple[type[BaseException], ...] = (*OUTAGES, ValueError)
REDIS_DOWN: tuple[type[BaseException], ...] = (*OUTAGES, redis.exceptions.RedisError)


class Finding(msgspec.Struct, frozen=True):
    check: str
    status: Status
    detail: str
    fix: str = ""


class Report(msgspec.Struct, frozen=True):
    ok: bool
    """No check failed."""
    findings: list[Finding]


def redacted(url: str) -> str:
    """A server URL without its password or token."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme in ("nats", "tls")):
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.password is not None else "***@"
    return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, parts.query, ""))


async def _bounded(step: Awaitable[_T], what: str) -> _T:
    try:
        return await asyncio.wait_for(step, TIMEOUT_S)
    except TimeoutError:
        raise TimeoutError(
            f"{what}: no answer within {TIMEOUT_S:.0f} s (up but frozen, or a firewall dropping)"
        ) from None


def _problem(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _skew(server_time: float, before: float, after: float, server: str) -> Finding:
    """This host's clock against a server's, read between ``before`` and ``after`` (this host's epoch seconds)."""
    skew = server_time - (before + after) / 2
    margin = (after - before) / 2
    detail = f"{server} clock {skew:+.3f} s from this host's (±{margin:.3f} s)"
    if abs(skew) - margin > SKEW_WARN_S:
        return Finding(
            f"clock {server.lower()}",
            "warn",
            detail,
            "synchronise the clocks (NTP): the projector's lag in seconds and `shipskip voters --since` compare the"
            " servers' timestamps with the hosts' clocks",
        )
    return Finding(f"clock {server.lower()}", "ok", detail)


# -- NATS ------------------------------------------------------------------------------------------------------------


async def stream_info_time(nc: NATS) -> float:
    """The server's time as it answered a stream-info request for VOTES (epoch seconds).

    nats-py's StreamInfo drops the answer's ``ts`` (nats-server 2.10 and later send the server's time with every
    JetStream API answer), so the same request is made through the client's public ``request`` and only that field
    is read.
    """
    answer = await nc.request(f"$JS.API.STREAM.INFO.{VOTES_STREAM}", b"", timeout=TIMEOUT_S)
    stamp = json.loads(answer.data).get("ts")
    if not isinstance(stamp, str):
        raise ValueError("the stream-info answer carries no server time (nats-server before 2.10)")
    # Nanoseconds in the answer; Python reads at most microseconds.
    stamp = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


async def check_nats(settings: TallySettings) -> list[Finding]:
    url = settings.servers.nats.url
    try:
        # The services' own way in (TLS, logins): what works for doctor works for them.
        nc = await connect(settings.servers.nats, "shipskip-doctor", timeout_s=5)
    except OUTAGES as exc:  # ConnectionError, naming where
        return [
            Finding(
                "nats",
                "fail",
                f"cannot reach NATS at {redacted(url)} ({_problem(exc)})",
                "start nats-server with JetStream (-js), or set SHIPSKIP_NATS_URL to where it runs",
            ),
            *[Finding(name, "skip", "NATS unreachable") for name in ("jetstream", "stream", "consumers", "catalogue")],
        ]
    try:
        return await _nats_findings(nc, settings)
    finally:
        await nc.close()


async def _nats_findings(nc: NATS, settings: TallySettings) -> list[Finding]:
    findings: list[Finding] = []
    server = nc.connected_server_version
    found = (server.major, server.minor)
    version = f"{server.major}.{server.minor}.{server.patch}"
    where = nc.connected_url.netloc.rsplit("@", 1)[-1] if nc.connected_url else "?"
    if found < NATS_MINIMUM:
        findings.append(
            Finding(
                "nats",
                "fail",
                f"nats-server {version} at {where}",
                f"upgrade nats-server to {NATS_MINIMUM[0]}.{NATS_MINIMUM[1]} or later",
            )
        )
    else:
        findings.append(Finding("nats", "ok", f"nats-server {version} at {where}"))
    js = nc.jetstream(timeout=TIMEOUT_S)
    try:
        account = await _bounded(js.account_info(), "JetStream")
    except OUTAGES as exc:
        findings.append(
            Finding(
                "jetstream",
                "fail",
                f"JetStream does not answer ({_problem(exc)})",
                "enable JetStream: nats-server -js, or a jetstream {} block in its configuration",
            )
        )
        findings += [Finding(name, "skip", "JetStream unavailable") for name in ("stream", "consumers", "catalogue")]
        return findings
    findings.append(Finding("jetstream", "ok", f"enabled: {account.streams} streams, {account.consumers} consumers"))
    try:
        info = await _bounded(js.stream_info(VOTES_STREAM), "JetStream")
    except NotFoundError:
        findings.append(
            Finding("stream", "fail", f"no {VOTES_STREAM} stream", "run `shipskip migrate` (creates it and the bucket)")
        )
        findings.append(Finding("consumers", "skip", f"no {VOTES_STREAM} stream"))
        findings.append(Finding("clock nats", "skip", f"no {VOTES_STREAM} stream to ask the time"))
    else:
        findings.append(_stream_finding(info.config, settings))
        findings.append(await _consumers_finding(js, settings))
        before = time.time()
        try:
            server_time = await _bounded(stream_info_time(nc), "NATS")
            findings.append(_skew(server_time, before, time.time(), "NATS"))
        except UNREADABLE as exc:
            findings.append(Finding("clock nats", "skip", f"the server's time could not be read ({_problem(exc)})"))
    try:
        catalog, revision = await _bounded(read_catalog(js), "JetStream")
    except OUTAGES as exc:
        findings.append(Finding("catalogue", "fail", f"cannot read the catalogue ({_problem(exc)})"))
    else:
        if catalog is None:
            findings.append(
                Finding(
                    "catalogue",
                    "warn",
                    "no catalogue loaded: every vote is refused as unknown_comparison",
                    "shipskip catalog load FILE",
                )
            )
        else:
            findings.append(
                Finding(
                    "catalogue",
                    "ok",
                    f"revision {revision}: {len(catalog.comparisons)} comparisons, {len(catalog.tools)} tools",
                )
            )
    return findings


def _stream_finding(config: StreamConfig, settings: TallySettings) -> Finding:
    """The VOTES stream against votes_stream_config (services/shared/jetstream.py)."""
    wrong: list[str] = []
    subjects = getattr(config, "subjects", None) or []
    if subjects != [VOTES_SUBJECTS]:
        wrong.append(f"subjects {subjects} (wanted [{VOTES_SUBJECTS!r}])")
    for field, wanted in (
        ("storage", StorageType.FILE),
        ("retention", RetentionPolicy.LIMITS),
        ("discard", DiscardPolicy.OLD),
    ):
        value = getattr(config, field, None)
        if value not in (None, wanted):
            wrong.append(f"{field} {getattr(value, 'value', value)} (wanted {wanted.value})")
    # The stream is the record of every vote: a limit would drop the oldest ones.
    for field in ("max_age", "max_msgs", "max_bytes", "max_msgs_per_subject"):
        value = getattr(config, field, None)
        if value not in (None, 0, -1):
            wrong.append(f"{field} {value} (would delete stored votes; wanted none)")
    window = getattr(config, "duplicate_window", None)
    if window is not None and abs(window - settings.duplicate_window_s) > 0.001:
        wrong.append(f"duplicate_window {window:g} s (SHIPSKIP_DUPLICATE_WINDOW_S is {settings.duplicate_window_s:g})")
    replicas = getattr(config, "num_replicas", None) or 1
    if replicas < settings.servers.stream_replicas:
        wrong.append(f"{replicas} replicas (SHIPSKIP_STREAM_REPLICAS is {settings.servers.stream_replicas})")
    if wrong:
        return Finding(
            "stream",
            "fail",
            f"{VOTES_STREAM}: " + "; ".join(wrong),
            "`shipskip migrate` sets the duplicate window and raises the replicas; a limit or another storage or"
            " retention was set by hand: `nats stream edit VOTES` (limits) or recreate it from a backup",
        )
    return Finding(
        "stream",
        "ok",
        f"{VOTES_STREAM}: {VOTES_SUBJECTS}, file storage, limits retention, no limits, duplicate window"
        f" {settings.duplicate_window_s:g} s, {replicas} replica{'s' if replicas > 1 else ''}",
    )


async def _consumers_finding(js: JetStreamContext, settings: TallySettings) -> Finding:
    """Each partition's durable consumer as services/shared/jetstream.py makes it (missing before its first start)."""
    missing: list[str] = []
    wrong: list[str] = []
    names = layout_names(settings.partitions)
    for name in names:
        try:
            info = await _bounded(js.consumer_info(VOTES_STREAM, name), "JetStream")
        except NotFoundError:
            missing.append(name)
            continue
        config = info.config
        for field, wanted in (("ack_policy", AckPolicy.ALL), ("deliver_policy", DeliverPolicy.ALL)):
            value = getattr(config, field, None)
            if value != wanted:
                wrong.append(f"{name}: {field} {getattr(value, 'value', value)} (wanted {wanted.value})")
        if config.durable_name != name:
            wrong.append(f"{name}: not durable")
        if config.max_deliver not in (None, -1):
            wrong.append(f"{name}: max_deliver {config.max_deliver} (wanted unlimited: a vote must never be dropped)")
    if wrong:
        return Finding(
            "consumers",
            "fail",
            "; ".join(wrong),
            "stop its projector, remove the consumer (`nats consumer rm VOTES NAME`) and start the projector: it"
            " makes it again and resumes from its position in Postgres",
        )
    if missing:
        return Finding(
            "consumers",
            "warn",
            f"no consumer {', '.join(missing)} yet (SHIPSKIP_PARTITIONS={settings.partitions})",
            "start the projector of each partition: it creates its consumer",
        )
    return Finding("consumers", "ok", f"{', '.join(names)}: ack all, deliver all, never dropped")


# -- Postgres ---------------------------------------------------------------------------------------------------------


async def check_postgres(settings: TallySettings) -> list[Finding]:
    url = settings.servers.database_url
    try:
        conn = await _bounded(asyncpg.connect(url, timeout=TIMEOUT_S), "Postgres")
    except OUTAGES as exc:
        return [
            Finding(
                "postgres",
                "fail",
                f"cannot reach Postgres at {redacted(url)} ({_problem(exc)})",
                "start Postgres, or set SHIPSKIP_DATABASE_URL to where it runs",
            ),
            *[Finding(name, "skip", "Postgres unreachable") for name in ("migrations", "partitions", "clock postgres")],
        ]
    try:
        return await _postgres_findings(conn, settings)
    except OUTAGES as exc:
        return [Finding("postgres", "fail", f"Postgres stopped answering ({_problem(exc)})", "look at its log")]
    finally:
        await conn.close(timeout=TIMEOUT_S)


async def _postgres_findings(conn: asyncpg.Connection, settings: TallySettings) -> list[Finding]:
    findings: list[Finding] = []
    version_num = int(await _bounded(conn.fetchval("show server_version_num"), "Postgres"))
    version = await _bounded(conn.fetchval("show server_version"), "Postgres")
    if version_num // 10000 < POSTGRES_MINIMUM:
        findings.append(
            Finding("postgres", "fail", f"Postgres {version}", f"upgrade Postgres to {POSTGRES_MINIMUM} or later")
        )
    else:
        findings.append(Finding("postgres", "ok", f"Postgres {version}"))
    before = time.time()
    now: datetime = await _bounded(conn.fetchval("select now()"), "Postgres")
    findings.append(_skew(now.timestamp(), before, time.time(), "Postgres"))

    known = sorted(path.stem for path in MIGRATIONS.glob("*.sql"))
    exists = await _bounded(conn.fetchval("select to_regclass('schema_migrations') is not null"), "Postgres")
    applied = (
        {row["version"] for row in await _bounded(conn.fetch("select version from schema_migrations"), "Postgres")}
        if exists
        else set()
    )
    missing = [version for version in known if version not in applied]
    unknown = sorted(applied - set(known))
    if missing:
        findings.append(
            Finding(
                "migrations",
                "fail",
                f"{len(missing)} of {len(known)} not applied: {', '.join(missing)}",
                "run `shipskip migrate`",
            )
        )
    elif unknown:
        findings.append(
            Finding(
                "migrations",
                "warn",
                f"the database has migrations this version does not know: {', '.join(unknown)}",
                "run the shipskip version that applied them (this one is older)",
            )
        )
    else:
        findings.append(Finding("migrations", "ok", f"all {len(known)} applied (last {known[-1]})"))
    if missing and not exists:
        findings.append(Finding("partitions", "skip", "no tables yet"))
        return findings

    positions = await _bounded(partition_positions(conn), "Postgres")
    folded_in = layout_count(positions)
    wanted = settings.partitions
    if folded_in is None:
        findings.append(Finding("partitions", "ok", "no projector has run yet (the first one claims the layout)"))
    elif folded_in != wanted:
        findings.append(
            Finding(
                "partitions",
                "fail",
                f"the projection is folded in {folded_in} partition(s); SHIPSKIP_PARTITIONS is {wanted}:"
                " its projectors stop at start",
                f"set SHIPSKIP_PARTITIONS={folded_in}, or re-partition with `shipskip rebuild --partitions {wanted}`",
            )
        )
    else:
        at = ", ".join(f"{name} at {seq}" for name, seq in positions.items())
        findings.append(Finding("partitions", "ok", f"{folded_in} partition(s): {at}"))
    return findings


# -- Redis ------------------------------------------------------------------------------------------------------------


async def check_redis(settings: TallySettings) -> list[Finding]:
    url = settings.servers.redis_url
    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S)
    try:
        info = await _bounded(client.info("server"), "Redis")
        before = time.time()
        seconds, micros = await _bounded(client.time(), "Redis")
        after = time.time()
    except REDIS_DOWN as exc:
        return [
            Finding(
                "redis",
                "fail",
                f"cannot reach Redis at {redacted(url)} ({_problem(exc)}): the votes API takes votes without it, with"
                " rate limits counted per process",
                "start Redis, or set SHIPSKIP_REDIS_URL to where it runs",
            ),
            Finding("clock redis", "skip", "Redis unreachable"),
        ]
    finally:
        await client.aclose()
    version = str(info.get("redis_version", "0"))
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < REDIS_MINIMUM:
        finding = Finding(
            "redis",
            "fail",
            f"Redis {version}: the rate limits' script needs 6.2 or later",
            "upgrade Redis to 6.2 or later",
        )
    else:
        finding = Finding("redis", "ok", f"Redis {version}")
    return [finding, _skew(seconds + micros / 1e6, before, after, "Redis")]


# -- the command ------------------------------------------------------------------------------------------------------


async def diagnose(env: Env | None = None) -> Report:
    """Every check, the three servers at once."""
    try:
        settings = TallySettings.from_env(env)
    except ConfigError as exc:
        return Report(ok=False, findings=[Finding("settings", "fail", str(exc), "set the variable it names")])
    groups: list[Callable[[TallySettings], Awaitable[list[Finding]]]] = [check_nats, check_postgres, check_redis]
    results = await asyncio.gather(*(group(settings) for group in groups))
    findings = [Finding("settings", "ok", "every SHIPSKIP_* setting read is valid")]
    for result in results:
        findings += result
    return Report(ok=all(finding.status != "fail" for finding in findings), findings=findings)


def format_report(report: Report) -> str:
    problems = sum(finding.status == "fail" for finding in report.findings)
    warnings = sum(finding.status == "warn" for finding in report.findings)
    lines = []
    for finding in report.findings:
        lines.append(f"{finding.status.upper():<5} {finding.check:<15} {finding.detail}")
        if finding.fix and finding.status in ("fail", "warn"):
            lines.append(f"{'':<21} fix: {finding.fix}")
    summary = "everything shipskip needs is in place" if not problems else f"{problems} problem(s)"
    if warnings:
        summary += f", {warnings} warning(s)"
    return "\n".join([*lines, f"shipskip doctor: {summary}"])


def doctor_main(as_json: bool) -> int:
    # The services log each failed try to reach NATS; a finding says it once.
    logging.getLogger("services.shared.jetstream").setLevel(logging.ERROR)
    report = asyncio.run(diagnose())
    print(msgspec.json.encode(report).decode() if as_json else format_report(report))
    return 0 if report.ok else 1
