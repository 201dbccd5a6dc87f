"""Live figures, the pure parts: the Wilson interval against an independent computation, the per-tool and
per-comparison figures, how a view takes in notices and reloads, ETags and SSE frames."""

from statistics import NormalDist

import pytest

from contracts.catalog import Comparison, PanelVerdict, Tool
from contracts.notices import TallyChanged, ToolTally, decode_notice, encode_notice
from services.tally.read.figures import comparison_figures, tool_figures, wilson_pct
from services.tally.read.http_cache import CachedJson, entity_tag, none_match
from services.tally.read.sse_frames import event_frame
from services.tally.read.standings import NoticeChain, Standing, merge_snapshot, newer_than, standing_of

Z = NormalDist().inv_cdf(0.975)


def score_test_bound(ship: int, total: int, upper: bool) -> float:
    """Where the score test's statistic |p̂ - p| / sqrt(p(1-p)/n) reaches z, found by bisection (no closed form)."""
    observed = ship / total

    def outside(p: float) -> bool:
        return (observed - p) ** 2 > Z * Z * p * (1 - p) / total

    # Between the observed share and the edge, the statistic grows monotonically away from the observed share.
    near, far = observed, (1.0 if upper else 0.0)
    if not outside(far):
        return far
    for _ in range(200):
        middle = (near + far) / 2
        if outside(middle):
            far = middle
        else:
            near = middle
    return (near + far) / 2


@pytest.mark.parametrize("total", [1, 2, 3, 7, 10, 25, 61, 100, 1000])
def test_wilson_interval_matches_the_inverted_score_test(total: int) -> None:
    for ship in sorted({0, 1, total // 3, total // 2, total - 1, total}):
        interval = wilson_pct(ship, total)
        assert interval is not None
        low, high = score_test_bound(ship, total, upper=False), score_test_bound(ship, total, upper=True)
        # The figures are rounded to 0.01 percentage points.
        assert interval[0] == pytest.approx(100 * low, abs=0.0051), (ship, total)
        assert interval[1] == pytest.approx(100 * high, abs=0.0051), (ship, total)
        assert interval[0] <= 100 * ship / total <= interval[1]


def tool(tool_id: str, ship: int = 3, skip: int = 1) -> Tool:
    return Tool(id=tool_id, name=tool_id.title(), pitch="p", entry="Free", panel=PanelVerdict(ship=ship, skip=skip))


COMPARISON = Comparison(id="a-vs-b", title="A vs B", tools=["a", "b"])
TOOLS = (tool("a"), tool("b", 1, 1))


def test_tool_figures_hold_counts_share_interval_and_the_panel_beside_them() -> None:
    below = tool_figures(TOOLS[0], ship=6, skip=3, min_ballots=10)
    assert (below.ship, below.skip, below.votes) == (6, 3, 9)
    assert below.ship_pct is None  # fewer than 10 ballots: the site shows "—"
    assert below.ci95 is not None
    assert below.panel.ship_pct == 75.0
    at = tool_figures(TOOLS[0], ship=6, skip=4, min_ballots=10)
    assert at.ship_pct == 60.0
    none = tool_figures(TOOLS[1], ship=0, skip=0, min_ballots=10)
    assert none.ci95 is None
    assert none.ship_pct is None
    assert none.panel.ship_pct == 50.0


def test_the_community_prefers_a_tool_only_when_the_intervals_do_not_overlap() -> None:
    clear = comparison_figures(COMPARISON, TOOLS, {"a": (90, 10), "b": (40, 60)}, 7, 10)
    assert clear.preferred_tool_id == "a"
    assert clear.position == 7
    close = comparison_figures(COMPARISON, TOOLS, {"a": (12, 8), "b": (9, 11)}, 7, 10)
    assert close.tools[0].ci95 is not None
    assert close.tools[1].ci95 is not None
    assert close.tools[0].ci95[0] < close.tools[1].ci95[1]  # overlapping
    assert close.preferred_tool_id is None
    # Clearly apart, but one side is below the minimum ballots: no preference either.
    few = comparison_figures(COMPARISON, TOOLS, {"a": (9, 0), "b": (0, 40)}, 7, 10)
    assert few.preferred_tool_id is None
    empty = comparison_figures(COMPARISON, TOOLS, {}, 0, 10)
    assert [t.votes for t in empty.tools] == [0, 0]


def notice(comparison_id: str, position: int, previous: int, ship: int = 1) -> TallyChanged:
    return TallyChanged(comparison_id, position, previous, [ToolTally("a", ship, 0)])


def test_notices_round_trip_and_carry_absolute_counts() -> None:
    sent = notice("a-vs-b", 12, 9, ship=4)
    assert decode_notice(encode_notice(sent)) == sent
    assert b'"type":"tally.changed/1"' in encode_notice(sent)
    assert standing_of(sent) == Standing(12, {"a": (4, 0)})


def test_the_chain_flags_missed_batches_only() -> None:
    chain = NoticeChain()
    assert chain.observe(5, 0) is False
    assert chain.observe(5, 0) is False  # another comparison of the same batch
    assert chain.observe(9, 5) is False
    assert chain.observe(14, 11) is True  # batch 11 never arrived
    assert chain.position == 14
    assert chain.observe(20, 14) is False
    assert chain.observe(3, 0) is False  # an old notice a reload covered
    chain.reloaded(18)
    assert chain.position == 20
    chain.reloaded(30)
    assert chain.observe(31, 30) is False


def test_a_reload_never_undoes_a_newer_notice_but_wins_at_equal_positions() -> None:
    held = {
        "x": Standing(10, {"a": (1, 0)}),  # older than the snapshot: replaced
        "y": Standing(25, {"a": (5, 0)}),  # applied from a notice while the snapshot was read: kept
        "z": Standing(20, {"a": (2, 0)}),  # same position, recounted by a rebuild: the snapshot's
        "w": Standing(20, {"a": (3, 0)}),  # same as the snapshot: nothing to do
    }
    snapshot = {
        "x": Standing(20, {"a": (2, 0)}),
        "y": Standing(20, {"a": (4, 0)}),
        "z": Standing(20, {"a": (1, 0)}),
        "w": Standing(20, {"a": (3, 0)}),
        "v": Standing(15, {"a": (7, 1)}),  # not held yet
    }
    assert merge_snapshot(held, snapshot) == {"x": snapshot["x"], "z": snapshot["z"], "v": snapshot["v"]}
    assert newer_than(Standing(11), Standing(10))
    assert not newer_than(Standing(10), Standing(10))
    assert newer_than(Standing(1), None)


def test_etags_name_the_bytes_and_if_none_match_follows_rfc_9110() -> None:
    body = b'{"position":7}'
    tag = entity_tag(7, body)
    assert tag.startswith('"7-')
    assert tag.endswith('"')
    assert entity_tag(7, body + b" ") != tag  # same position, other bytes: another tag
    assert entity_tag(8, body) != tag
    assert none_match(tag, tag)
    assert none_match(f'"other", W/{tag}', tag)
    assert none_match("*", tag)
    assert not none_match('"7-0000000000000000"', tag)
    cached = CachedJson(body, 7)
    assert cached.answer(tag) is cached.not_modified
    assert cached.answer(None) is cached.ok
    assert cached.answer('"stale"') is cached.ok


def test_sse_frames() -> None:
    assert event_frame(42, b'{"a":1}') == b'id: 42\ndata: {"a":1}\n\n'
    with pytest.raises(ValueError, match="one line"):
        event_frame(1, b"two\nlines")
