"""Generated catalogues of any size, shaped like the seed pages (infra/catalog/demo.json): every tool with its
pitch, a summary of about 450 characters and two reviewer quotes of about 900 each; comparisons of two tools.

Deterministic for a given size and seed. Ids sort in generation order (``tool-000001``, ``cmp-000001``), so a test
can reason about pages. Used by the catalogue tests (tests/integration/test_catalog_scale.py) and by the
``catalog.scale`` benchmark (bench/catalog_scale.py).
"""

import random

from contracts.catalog import Catalog, Comparison, PanelVerdict, Quote, Tool

CATEGORIES = [
    "Developer Tools", "Design", "Writing", "Data", "Security", "Productivity", "Marketing", "Sales", "Support",
    "Finance", "Video", "Audio", "Search", "Infrastructure", "Education", "Research", "Health", "Legal",
]  # fmt: skip
_WORDS = [
    "the", "primitive", "here", "is", "clean", "adapters", "recipes", "quantization", "single", "GPU", "workflow",
    "agentic", "model", "benchmark", "moat", "buyer", "pricing", "latency", "context", "window", "retrieval",
    "evaluation", "deployment", "tokens", "fine-tuning", "inference", "open", "weights", "developer", "experience",
    "onboarding", "integration", "roadmap", "differentiation", "competitor", "distribution", "enterprise", "team",
    "scenario", "breaks", "months", "ships", "skip", "earns", "place", "reference", "implementation", "thesis",
    "falsifiable", "trend", "second-order",
]  # fmt: skip


def _prose(rng: random.Random, length: int) -> str:
    words: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words).capitalize()[:length].rstrip() + "."


def tool_id(index: int) -> str:
    return f"tool-{index:06d}"


def comparison_id(index: int) -> str:
    return f"cmp-{index:06d}"


def synthetic_tool(index: int, rng: random.Random, entry: str = "Free") -> Tool:
    ship = rng.randint(0, 4)
    return Tool(
        id=tool_id(index),
        name=f"Tool {index} {rng.choice(_WORDS).capitalize()}",
        pitch=_prose(rng, 80),
        entry=entry,
        panel=PanelVerdict(ship=ship, skip=4 - ship),
        category=CATEGORIES[index % len(CATEGORIES)],
        summary=_prose(rng, 450),
        quotes=[Quote(verdict="ship", text=_prose(rng, 900)), Quote(verdict="skip", text=_prose(rng, 900))],
    )


def pair(index: int, tools: int) -> tuple[int, int]:
    """Two different tools for comparison ``index``; every pair at most once while index < tools * (tools - 1)."""
    left = index % tools
    right = (left + 1 + index // tools) % tools
    return left, right


def synthetic_catalog(tools: int, comparisons: int, seed: int = 7) -> Catalog:
    rng = random.Random(seed)
    made = [synthetic_tool(index, rng) for index in range(tools)]
    listed = []
    for index in range(comparisons):
        left, right = pair(index, tools)
        listed.append(
            Comparison(
                id=comparison_id(index),
                title=f"{made[left].name} vs {made[right].name}",
                tools=[made[left].id, made[right].id],
                lede=_prose(rng, 130),
            )
        )
    return Catalog(tools=made, comparisons=listed)
