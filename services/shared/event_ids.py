"""Time-ordered unique event ids (ULID layout: 48-bit milliseconds, 80 random bits, Crockford base32).

An id is a vote's JetStream dedup key when its request has no Idempotency-Key, so its 80 random bits must be as
good as ``os.urandom``'s: they are, taken from one ``os.urandom`` read of many ids' worth, which spares a system
call (and a GIL release, which granian's threads may take the GIL on) per vote. The text is written ten bits at a
time from a table of every pair of characters, instead of a character at a time.
"""

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
"""The two characters of every 10-bit value."""
_SHIFTS = range(120, -1, -10)
"""26 characters hold 130 bits: 13 pairs, the first of which holds the top 8 bits of the 128 (and two zeros)."""

_RANDOM_BYTES = 10
_BLOCK = _RANDOM_BYTES * 512
_random = b""
_offset = 0


def _forget_random() -> None:
    global _random, _offset
    _random, _offset = b"", 0


os.register_at_fork(after_in_child=_forget_random)  # a forked worker must not hand out its parent's bits again


def _random_bits() -> int:
    global _random, _offset
    if _offset >= len(_random):
        _random, _offset = os.urandom(_BLOCK), 0
    start = _offset
    _offset = start + _RANDOM_BYTES
    return int.from_bytes(_random[start:_offset], "big")


def new_event_id(now_ms: int | None = None) -> str:
    value = ((now_ms if now_ms is not None else time.time_ns() // 1_000_000) << 80) | _random_bits()
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
