"""Counts in the operator commands' output: "1 event", "2 events", never "1 events"."""


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``count`` and the noun that goes with it (``many``: for nouns that take more than an "s")."""
    return f"{count} {singular if count == 1 else (many or singular + 's')}"
