"""Request and response bodies of the votes and tally HTTP APIs."""

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from contracts.events import Verdict
from contracts.ids import Slug

MAX_VOTE_BODY_BYTES = 4096


class VoteRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /v1/comparisons/{comparison_id}/votes. Decoded strictly: no type coercion, no unknown fields."""

    tool_id: Slug
    verdict: Verdict


class VoteAccepted(msgspec.Struct, frozen=True):
    status: str
    """"accepted" (202), or "unchanged" (200) when the voter repeats their current verdict."""
    event_id: str | None = None


class VoterIssued(msgspec.Struct, frozen=True):
    voter_token: str


class VoterForgottenReply(msgspec.Struct, frozen=True):
    """DELETE /v1/voters/me, 202: the forget is stored; every ballot of the voter leaves the tallies."""

    status: Literal["forgotten"]
    event_id: str
    """The ``voter.forgotten/1`` event stored for this request."""


class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """Every 4xx/5xx answer: a stable machine-readable code and a sentence naming the problem."""

    error: str
    detail: str
    retry_after: int | None = None


class PanelFigures(msgspec.Struct, frozen=True):
    ship: int
    skip: int
    ship_pct: float | None


class ToolCommunity(msgspec.Struct, frozen=True):
    tool_id: str
    name: str
    ship: int
    skip: int
    votes: int
    ship_pct: float | None
    """ship / (ship + skip) in percent; null below the minimum number of ballots."""
    ci95: tuple[float, float] | None
    """95 % Wilson score interval of the ship share, in percent; null with no ballots."""
    panel: PanelFigures


class ComparisonCommunity(msgspec.Struct, frozen=True):
    comparison_id: str
    title: str
    position: int
    """The VOTES stream sequence these figures are as of."""
    min_ballots: int
    tools: list[ToolCommunity]
    preferred_tool_id: str | None
    """The tool the community prefers, only when the two intervals do not overlap."""


class CommunityBatch(msgspec.Struct, frozen=True):
    comparisons: list[ComparisonCommunity]


class ToolEntry(msgspec.Struct, frozen=True):
    id: str
    name: str
    pitch: str
    entry: str
    panel: PanelFigures
    category: str


class ComparisonEntry(msgspec.Struct, frozen=True):
    id: str
    title: str
    tools: list[ToolEntry]


class ComparisonList(msgspec.Struct, frozen=True):
    """GET /v1/comparisons: one page, in id order."""

    comparisons: list[ComparisonEntry]
    next_cursor: str | None
    """Pass as ``cursor`` for the next page; null on the last one."""
    revision: int
    """The catalogue revision this page was read from."""


class QuoteEntry(msgspec.Struct, frozen=True):
    verdict: str
    text: str


class ToolDetail(msgspec.Struct, frozen=True):
    id: str
    name: str
    category: str
    pitch: str
    entry: str
    summary: str
    panel: PanelFigures
    quotes: list[QuoteEntry]


class ToolPage(msgspec.Struct, frozen=True):
    """GET /v1/tools/{tool_id}: the tool, and the first page of the comparisons it is in."""

    tool: ToolDetail
    comparisons: list[ComparisonEntry]
    comparison_count: int
    next_cursor: str | None
    """The rest: GET /v1/comparisons?tool_id=...&cursor=this; null when ``comparisons`` holds them all."""
    revision: int


IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=255)]


class VotesHealth(msgspec.Struct, frozen=True):
    """GET /healthz of the votes API (documentation of its answer)."""

    status: str
    limits: Literal["shared", "per-process"]
    """Whether this copy shares its rate limits through Redis, or counts them alone (Redis unreachable)."""
    pid: int
    """The process that answered: with several workers (granian --workers), which one."""


class ReadHealth(msgspec.Struct, frozen=True):
    """GET /healthz of the read API: alive, and how its live view and streams are doing."""

    status: str
    position: int
    """The last batch position its view has taken in."""
    reloads: int
    """Times the view was read from Postgres (change notices alone never read it)."""
    streams: int
    """Open /community/stream connections."""
    pid: int
    """The process that answered: with several workers (granian --workers), which one."""


class Readiness(msgspec.Struct, frozen=True):
    """GET /readyz of every process: 200 when each of its checks passed (or only a tolerated one failed:
    "degraded"), else 503 with what is wrong."""

    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, str]
    """Per check (``nats``, ``redis``, ``postgres``, ``view``, ...): "ok", or what is wrong."""
    problems: list[str]
    """One sentence per failed check, naming it; empty when ready."""


class HistoryPoint(msgspec.Struct, frozen=True):
    end: datetime
    """The end of the bucket: the figures count every change stamped before it (the open bucket's: up to now)."""
    ship: int
    skip: int
    votes: int
    ship_pct: float | None
    """ship / votes in percent; null below the minimum number of ballots."""


class ToolHistory(msgspec.Struct, frozen=True):
    tool_id: str
    name: str
    points: list[HistoryPoint]


class ComparisonHistory(msgspec.Struct, frozen=True):
    comparison_id: str
    title: str
    bucket: Literal["hour", "day"]
    start: datetime
    """The start of the first bucket (``from`` rounded down to a bucket boundary)."""
    end: datetime
    """The end of the last bucket."""
    closed_until: datetime
    """Points ending at or before this time are closed (the bucket ended 5 minutes ago or more); the later ones
    may still change, the open bucket's (ending after now) shows the figures as they stand now."""
    min_ballots: int
    tools: list[ToolHistory]


class CommunityAsOf(msgspec.Struct, frozen=True):
    comparison_id: str
    title: str
    as_of: datetime
    """The time the figures stood at: the asked time rounded down to a whole minute (the history's resolution)."""
    min_ballots: int
    tools: list[ToolCommunity]
    preferred_tool_id: str | None
