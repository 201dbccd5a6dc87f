"""Failed admin logins per address: refused past the limit until the window ends, memory bounded."""

from services.operators.auth_failures import MAX_ADDRESSES, FailedLogins


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_past_its_failures_waits_out_the_window_and_others_do_not() -> None:
    clock = Clock()
    failures = FailedLogins(limit=3, window_s=60, clock=clock)
    for _ in range(2):
        failures.failed("10.0.0.1")
    assert failures.retry_after("10.0.0.1") is None
    failures.failed("10.0.0.1")
    clock.now += 20.5
    assert failures.retry_after("10.0.0.1") == 40
    assert failures.retry_after("10.0.0.2") is None
    clock.now += 40
    assert failures.retry_after("10.0.0.1") is None
    failures.failed("10.0.0.1")  # a new window: one failure in it
    assert failures.retry_after("10.0.0.1") is None


def test_the_addresses_remembered_are_bounded() -> None:
    clock = Clock()
    failures = FailedLogins(limit=1, window_s=60, clock=clock)
    for number in range(MAX_ADDRESSES + 1):
        failures.failed(f"address-{number}")
    assert failures.retry_after(f"address-{MAX_ADDRESSES}") == 60  # the newest kept
    assert failures.retry_after("address-0") is None  # the oldest forgotten
