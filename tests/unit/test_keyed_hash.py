"""KeyedHash is HMAC-SHA256: the bytes of ``hmac.new`` for keys shorter than, as long as and longer than a block."""

import hashlib
import hmac

import pytest

from services.votes.keyed_hash import KeyedHash


@pytest.mark.parametrize("key_length", [0, 1, 16, 32, 63, 64, 65, 200])
def test_the_mac_is_hmac_sha256_for_every_key_length(key_length: int) -> None:
    key = bytes(range(7, 7 + key_length % 249)) + b"\xff" * max(0, key_length - 249)
    keyed = KeyedHash(key)
    for message in (b"", b"v" * 16, bytes(range(256)) * 5):
        expected = hmac.new(key, message, hashlib.sha256)
        assert keyed.digest(message) == expected.digest()
        assert keyed.hexdigest(message) == expected.hexdigest()


def test_one_message_does_not_change_the_next() -> None:
    keyed = KeyedHash(b"k" * 32)
    first = keyed.digest(b"a")
    keyed.digest(b"b" * 1000)
    assert keyed.digest(b"a") == first
