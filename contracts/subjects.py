"""NATS names: the vote stream, its subjects, and the change notices."""

VOTES_STREAM = "VOTES"
"""The append-only stream of vote events: the source of truth."""

VOTES_SUBJECT_PREFIX = "votes.v1."
VOTES_SUBJECTS = VOTES_SUBJECT_PREFIX + "*"
"""One subject per comparison, so one comparison can be replayed with a subject filter."""

MODERATION_SUBJECT = VOTES_SUBJECT_PREFIX + "_moderation"
"""Moderation events (voids) apply to every comparison; "_" keeps the name apart from every comparison slug."""

VOTES_ALL = VOTES_SUBJECT_PREFIX + ">"
"""Every event as stored: under its published subject, or routed to a partition as ``votes.v1.r<N>.<i>.<last>``
by the stream's subject transform when the projection is partitioned (services/tally/routing.py)."""

TALLY_CONSUMER = "tally"
"""The projector's durable pull consumer on VOTES."""

TALLY_NOTICE_PREFIX = "tally.v1."
"""Core-NATS subjects on which the projector announces new figures after each commit."""

TALLY_RELOAD_SUBJECT = "tally.reload"
"""Published after a rebuild swapped the tables: every read view reloads from Postgres."""

CATALOG_BUCKET = "CATALOG"
CATALOG_KEY = "current"
"""The catalogue lives in a JetStream key-value bucket, so every service sees a new one without a restart."""


def votes_subject(comparison_id: str) -> str:
    return VOTES_SUBJECT_PREFIX + comparison_id


def published_subject(stored: str) -> str:
    """The subject an event was published on, from the one it is stored under (routed or not)."""
    if stored.count(".") == 2:
        return stored
    return VOTES_SUBJECT_PREFIX + stored.rsplit(".", 1)[-1]


def comparison_of_subject(subject: str) -> str:
    return published_subject(subject).removeprefix(VOTES_SUBJECT_PREFIX)


def tally_notice_subject(comparison_id: str) -> str:
    return TALLY_NOTICE_PREFIX + comparison_id
