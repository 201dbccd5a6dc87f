"""Voter tokens and the keyed hashes that stand for people in events.

A token is ``base64url(payload) "." base64url(mac)``: the payload holds a format byte, 16 random bytes (the
voter) and the issue time; the MAC is HMAC-SHA256 under the first of the accepted keys, so keys can be rotated by
putting a new one first and dropping the old one later. Events never hold a token: only an HMAC of the voter,
and of the client address under a random key that changes every UTC day and is kept for two days at most.
"""

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from datetime import UTC, datetime
from typing import Protocol

from services.votes.keyed_hash import KeyedHash

_FORMAT = 1
_PAYLOAD = struct.Struct(">B16sQ")  # format, voter, issued-at (unix seconds)
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _unb64(text: str) -> bytes:
    # base64.urlsafe_b64decode's own steps (ASCII only, the url-safe alphabet mapped back), without its layers.
    return binascii.a2b_base64(text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4))


class TokenRefused(Exception):
    """A token that is missing, malformed, forged or expired; the message says which."""


CLOCK_SKEW_S = 300
"""How far ahead of this server's clock a token's issue time may be (another copy's clock may run ahead)."""


class VoterTokens:
    def __init__(self, keys: list[bytes], ttl_s: int, clock_skew_s: int = CLOCK_SKEW_S) -> None:
        self._macs = [KeyedHash(key) for key in keys]  # HMAC-SHA256 under each accepted key, the signing one first
        self._ttl_s = ttl_s
        self._skew_s = clock_skew_s

    @staticmethod
    def _mac(key: KeyedHash, payload: bytes) -> bytes:
        return key.digest(payload)[:_MAC_BYTES]

    def issue(self, now: float | None = None) -> str:
        payload = _PAYLOAD.pack(_FORMAT, secrets.token_bytes(16), int(now if now is not None else time.time()))
        return f"{_b64(payload)}.{_b64(self._mac(self._macs[0], payload))}"

    def verify(self, token: str, now: float | None = None) -> bytes:
        """The voter's raw id, or TokenRefused."""
        head, dot, tail = token.partition(".")
        if not dot or len(token) > 128:
            raise TokenRefused("malformed voter token")
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (ValueError, UnicodeEncodeError):
            raise TokenRefused("malformed voter token") from None
        if len(payload) != _PAYLOAD.size or len(mac) != _MAC_BYTES:
            raise TokenRefused("malformed voter token")
        if _b64(payload) != head or _b64(mac) != tail:
            # The decoder ignores stray characters and the unused low bits of the last one, so one token has many
            # spellings: a cache or a log that tells requests apart by their token would see several voters.
            raise TokenRefused("malformed voter token: not in its one base64url spelling (unpadded, canonical)")
        if not any(hmac.compare_digest(self._mac(key, payload), mac) for key in self._macs):
            raise TokenRefused("voter token signature is not valid")
        version, voter, issued_at = _PAYLOAD.unpack(payload)
        if version != _FORMAT:
            raise TokenRefused("unknown voter token format")
        now = now if now is not None else time.time()
        if issued_at > now + self._skew_s:
            # Signed, so issued under our key, but never by a clock this far ahead: it would never expire.
            raise TokenRefused(
                f"voter token is issued in the future (more than {self._skew_s} s ahead of the server's clock)"
            )
        if issued_at + self._ttl_s < now:
            raise TokenRefused("voter token has expired; ask for a new one")
        return bytes(voter)


class DayKeySource(Protocol):
    def key(self, day: str) -> bytes:
        """The key that hashes client addresses on this UTC day (``YYYY-MM-DD``)."""
        ...


class LocalDayKeys:
    """A random key per UTC day, known to this process only and forgotten two days on.

    Random rather than derived from a long-lived secret, so that once the key is gone no one, not even with the
    service's secrets, can tell whose address a hash was. Shared by the copies of the service through Redis
    (``services.votes.day_keys``); this class alone is the fallback without it.
    """

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def key(self, day: str) -> bytes:
        found = self._keys.get(day)
        if found is None:
            found = self.set(day, secrets.token_bytes(32))
        return found

    def set(self, day: str, key: bytes) -> bytes:
        # Keep today and yesterday only (a request begun just before midnight still hashes under its own day).
        self._keys[day] = key
        if len(self._keys) > 2:
            self._keys = dict(sorted(self._keys.items())[-2:])
        return key

    def known(self, day: str) -> bool:
        return day in self._keys


def utc_day(now: datetime) -> str:
    # isoformat, not strftime("%Y-%m-%d"): the same text at a sixth of the cost, twice a vote and once a fold.
    return now.astimezone(UTC).date().isoformat()


class Hasher:
    """Keyed hashes of voters and client addresses."""

    def __init__(self, key: bytes, day_keys: DayKeySource | None = None) -> None:
        self._voter = KeyedHash(hmac.new(key, b"shipskip/voter", hashlib.sha256).digest())
        self._bucket = KeyedHash(hmac.new(key, b"shipskip/rate-limit-address", hashlib.sha256).digest())
        self._day_keys = day_keys or LocalDayKeys()
        self._day_hash: tuple[bytes, KeyedHash] = (b"", KeyedHash(b""))  # the last day key used, made once

    def voter_id(self, voter: bytes) -> str:
        return self._voter.hexdigest(voter)[:32]

    def client(self, address: str, now: datetime | None = None) -> str:
        """The address as kept in events: an HMAC under the day's random key (see LocalDayKeys)."""
        key = self._day_keys.key(utc_day(now or datetime.now(UTC)))
        if key != self._day_hash[0]:
            self._day_hash = (key, KeyedHash(key))
        return self._day_hash[1].hexdigest(address.encode())[:32]

    def address_bucket(self, address: str) -> str:
        """The address as a rate-limit subject in Redis: stable across days, and gone when its counter expires."""
        return self._bucket.hexdigest(address.encode())[:32]
