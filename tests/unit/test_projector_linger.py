"""How long the live projector lets its next batch gather (services/tally/projector.py, ``Projector._linger_s``)."""

from typing import Any, cast

from services.shared.config import Env
from services.tally.projector import Projector
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
    # Times a binary fraction apart, so that rates come out exact.
    assert folding._linger_s(1, 1024.0) == 0.025  # the first batch after start: no rate known yet
    # 125 events in the 62.5 ms since the last fetch: 2,000 a second, as the freshness benchmark sends them.
    assert folding._linger_s(125, 1024.0625) == 0.025
    # 375 in the next 62.5 ms: 6,000 a second.
    assert folding._linger_s(375, 1024.125) == 0.1
    # Exactly the busy rate (4,000 a second) counts as busy; just under it does not.
    assert folding._linger_s(250, 1024.1875) == 0.1
    assert folding._linger_s(249, 1024.25) == 0.025
    # After a quiet spell (the fetch waited for the one vote it brought), back to the short linger.
    assert folding._linger_s(1, 1029.0) == 0.025


def test_both_lingers_and_the_rate_are_settings() -> None:
    folding = projector(SHIPSKIP_BATCH_LINGER_MS="0", SHIPSKIP_BUSY_LINGER_MS="40", SHIPSKIP_BUSY_RATE="100")
    assert folding._linger_s(5, 16.0) == 0.0
    assert folding._linger_s(5, 16.125) == 0.0  # 40 a second
    assert folding._linger_s(25, 16.25) == 0.04  # 200 a second
