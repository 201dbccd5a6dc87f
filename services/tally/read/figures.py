"""Community figures: shares, 95 % Wilson score intervals, and which tool the community prefers."""

import math
from collections.abc import Mapping

from contracts.catalog import Comparison, Tool
from contracts.http import ComparisonCommunity, PanelFigures, ToolCommunity

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal distribution


def share_pct(ship: int, total: int) -> float | None:
    return round(100.0 * ship / total, 2) if total else None


def wilson_pct(ship: int, total: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ship/total, in percent; None with no ballots."""
    if total <= 0:
        return None
    p = ship / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return round(100.0 * max(0.0, centre - half), 2), round(100.0 * min(1.0, centre + half), 2)


def tool_figures(tool: Tool, ship: int, skip: int, min_ballots: int) -> ToolCommunity:
    votes = ship + skip
    panel_total = tool.panel.ship + tool.panel.skip
    return ToolCommunity(
        tool_id=tool.id,
        name=tool.name,
        ship=ship,
        skip=skip,
        votes=votes,
        ship_pct=share_pct(ship, votes) if votes >= min_ballots else None,
        ci95=wilson_pct(ship, votes),
        panel=PanelFigures(
            ship=tool.panel.ship, skip=tool.panel.skip, ship_pct=share_pct(tool.panel.ship, panel_total)
        ),
    )


def preferred(left: ToolCommunity, right: ToolCommunity) -> str | None:
    """The tool with the higher share, only when both intervals exist and do not overlap."""
    if left.ci95 is None or right.ci95 is None or left.ship_pct is None or right.ship_pct is None:
        return None
    if left.ci95[0] > right.ci95[1]:
        return left.tool_id
    if right.ci95[0] > left.ci95[1]:
        return right.tool_id
    return None


def comparison_figures(
    comparison: Comparison,
    tools: tuple[Tool, Tool],
    counts: Mapping[str, tuple[int, int]],
    position: int,
    min_ballots: int,
) -> ComparisonCommunity:
    left, right = (tool_figures(tool, *counts.get(tool.id, (0, 0)), min_ballots) for tool in tools)
    return ComparisonCommunity(
        comparison_id=comparison.id,
        title=comparison.title,
        position=position,
        min_ballots=min_ballots,
        tools=[left, right],
        preferred_tool_id=preferred(left, right),
    )
