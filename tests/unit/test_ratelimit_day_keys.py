"""Client addresses in events: hashed under a random key per UTC day, never derivable from the service's secrets."""

from datetime import UTC, datetime, timedelta

from services.votes.identity import Hasher, LocalDayKeys

KEY = b"hash-key-0123456789abcdef"
NOON = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_an_address_hashes_alike_all_day_and_differently_the_next_day() -> None:
    hasher = Hasher(KEY)
    today = hasher.client("198.51.100.7", NOON)
    assert today == hasher.client("198.51.100.7", NOON.replace(hour=23, minute=59))
    assert today != hasher.client("198.51.100.8", NOON)
    assert today != hasher.client("198.51.100.7", NOON + timedelta(days=1))
    assert "198.51.100.7" not in today


def test_the_day_key_is_random_not_derived_from_the_secret() -> None:
    # Two processes with the same secret but no shared day key cannot reproduce each other's hashes.
    assert Hasher(KEY).client("198.51.100.7", NOON) != Hasher(KEY).client("198.51.100.7", NOON)
    shared = LocalDayKeys()
    assert Hasher(KEY, shared).client("198.51.100.7", NOON) == Hasher(KEY, shared).client("198.51.100.7", NOON)


def test_old_day_keys_are_forgotten() -> None:
    keys = LocalDayKeys()
    first = keys.key("2026-03-01")
    keys.key("2026-03-02")
    assert keys.key("2026-03-01") == first  # yesterday is still known
    keys.key("2026-03-03")
    assert not keys.known("2026-03-01")
    assert keys.key("2026-03-01") != first


def test_address_buckets_are_keyed_and_stable() -> None:
    assert Hasher(KEY).address_bucket("198.51.100.7") == Hasher(KEY).address_bucket("198.51.100.7")
    assert Hasher(KEY).address_bucket("198.51.100.7") != Hasher(b"x" * 24).address_bucket("198.51.100.7")
