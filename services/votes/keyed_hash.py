"""HMAC-SHA256 under one fixed key, made once and reused for every message (RFC 2104, as ``hmac.new`` computes it).

``hmac.new(key, msg, sha256)`` pads the key and hashes both pads again on every call; a vote takes three HMACs
(its token's MAC, the voter id, the client address), each under a key that does not change. Here the two padded
key blocks are hashed once, and each message copies those states: 0.6 µs a MAC instead of 1.6 µs (timeit, this
machine). The same bytes as ``hmac.new``: tests/unit/test_keyed_hash.py compares them for keys of every length class.
"""

import hashlib

_BLOCK = 64  # SHA-256's block size
_INNER_PAD = bytes(x ^ 0x36 for x in range(256))
_OUTER_PAD = bytes(x ^ 0x5C for x in range(256))


class KeyedHash:
    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()  # RFC 2104: a key longer than a block is hashed first
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_INNER_PAD))
        self._outer = hashlib.sha256(block.translate(_OUTER_PAD))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, message: bytes) -> str:
        return self.digest(message).hex()
