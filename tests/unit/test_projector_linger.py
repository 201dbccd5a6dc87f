"""How long the live projector lets its next batch gather (tally/projector/projector.py, ``Projector._linger_s``)."""

from typing import Any, cast

from services.shared.config import Env
from services.tally.projector.projector import Projector
from services.tally.settings import TallySettings

BASE = {
    "SHIPSKIP_NATS_URL": "nats://127.0.0.1:1",
    "SHIPSKIP_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
    "SHIPSKIP_REDIS_URL": "redis://127.0.0.1:1/0",
}


def projector(**extra: str) -> Projector:
    settings = TallySettings.from_env(Env({**BASE, **extra}, {}))
    none = cast(Any, None)  # the rule reads only the settings: no server is touched
    return Projector(settings, none, none, none)


def test_batches_gather_longer_only_while_events_come_faster_than_the_busy_rate() -> None:
    folding = projector()
    # Times binary fractions apart, so that rates come out exact; the rate window is half a second.
    assert folding._linger_s(1, 1024.0) == 0.025  # the first batch after start: no rate known yet
    # 2,000 a second, as the freshness benchmark sends them: 125 events every 62.5 ms, for a whole window.
    for step in range(1, 9):
        assert folding._linger_s(125, 1024.0 + step * 0.0625) == 0.025
    # 6,000 a second: the short linger until a whole window of it has been seen, then the long one.
    for step in range(1, 8):
        assert folding._linger_s(375, 1024.5 + step * 0.0625) == 0.025
    assert folding._linger_s(375, 1025.0) == 0.3
    # It stays long within the next window, whatever one batch brings.
    assert folding._linger_s(10, 1025.25) == 0.3
    # Exactly the busy rate over a window (4,000 a second) counts as busy; just under it does not.
    assert folding._linger_s(1990, 1025.5) == 0.3
    assert folding._linger_s(1999, 1026.0) == 0.025
    assert folding._linger_s(2000, 1026.5) == 0.3
    # After a quiet spell (the fetch waited for the one vote it brought), back to the short linger.
    assert folding._linger_s(1, 1031.0) == 0.025


def test_a_burst_in_one_batch_does_not_make_a_busy_window() -> None:
    folding = projector()
    folding._linger_s(1, 64.0)
    # 2,000 a second, but one batch brings three times its share: 6,000 a second over its own 62.5 ms (a burst
    # after a hiccup), 2,500 over the window.
    counts = [125, 125, 125, 375, 125, 125, 125, 125, 125, 125]
    lingers = [folding._linger_s(count, 64.0 + (step + 1) * 0.0625) for step, count in enumerate(counts)]
    assert lingers == [0.025] * len(counts)


def test_both_lingers_and_the_rate_are_settings() -> None:
    folding = projector(SHIPSKIP_BATCH_LINGER_MS="0", SHIPSKIP_BUSY_LINGER_MS="40", SHIPSKIP_BUSY_RATE="100")
    assert folding._linger_s(5, 16.0) == 0.0
    assert folding._linger_s(20, 16.5) == 0.0  # 40 a second
    assert folding._linger_s(100, 17.0) == 0.04  # 200 a second
