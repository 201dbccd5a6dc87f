"""Community figures: the Wilson interval against independently computed values, and the preference rule."""

import pytest

from services.tally.read.figures import share_pct, wilson_pct


@pytest.mark.parametrize(
    ("ship", "total", "low", "high"),
    [
        # Computed outside this code with the closed form (2np + z² ± z√(z² + 4np(1−p))) / (2(n + z²)), z = 1.959964.
        (0, 10, 0.0, 27.75),
        (5, 10, 23.66, 76.34),
        (10, 10, 72.25, 100.0),
        (62, 100, 52.21, 70.90),
        (1, 1, 20.65, 100.0),
    ],
)
def test_wilson_interval(ship: int, total: int, low: float, high: float) -> None:
    interval = wilson_pct(ship, total)
    assert interval is not None
    assert interval[0] == pytest.approx(low, abs=0.01)
    assert interval[1] == pytest.approx(high, abs=0.01)


def test_no_ballots_no_interval_no_share() -> None:
    assert wilson_pct(0, 0) is None
    assert share_pct(0, 0) is None
    assert share_pct(3, 4) == 75.0
