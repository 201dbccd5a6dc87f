"""Identifiers shared by every contract.

Comparison and tool ids are slugs so that they are safe, unescaped, in NATS subjects, Redis keys, SQL and URLs.
"""

from typing import Annotated

from msgspec import Meta

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"

Slug = Annotated[
    str,
    Meta(
        pattern=SLUG_PATTERN,
        max_length=64,
        description="lowercase letters, digits and hyphens; at most 64 characters",
    ),
]
