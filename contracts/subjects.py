"""NATS names: the vote stream, its subjects, and the change notices."""

VOTES_STREAM = "VOTES"
"""The append-only stream of vote events: the source of truth."""

VOTES_SUBJECT_PREFIX = "votes.v1."
VOTES_SUBJECTS = VOTES_SUBJECT_PREFIX + "*"
"""One subject per comparison, so one comparison can be replayed with a subject filter."""

MODERATION_SUBJECT = VOTES_SUBJECT_PREFIX + "_moderation"
"""Moderation events (voids) apply to every comparison; "_" keeps the name apart from every comparison slug."""

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


def comparison_of_subject(subject: str) -> str:
    return subject.removeprefix(VOTES_SUBJECT_PREFIX)


def tally_notice_subject(comparison_id: str) -> str:
    return TALLY_NOTICE_PREFIX + comparison_id
