"""Voter tokens and the keyed hashes that stand for people in events.

A token is ``base64url(payload) "." base64url(mac)``: the payload holds a format byte, 16 random bytes (the
voter) and the issue time; the MAC is HMAC-SHA256 under the first of the accepted keys, so keys can be rotated by
putting a new one first and dropping the old one later. Events never hold a token: only an HMAC of the voter,
and of the client address under a key that changes every day.
"""

import base64
import hashlib
import hmac
import secrets
import struct
import time
from datetime import UTC, datetime

_FORMAT = 1
_PAYLOAD = struct.Struct(">B16sQ")  # format, voter, issued-at (unix seconds)
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenRefused(Exception):
    """A token that is missing, malformed, forged or expired; the message says which."""


class VoterTokens:
    def __init__(self, keys: list[bytes], ttl_s: int) -> None:
        self._keys = keys
        self._ttl_s = ttl_s

    def _mac(self, key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, now: float | None = None) -> str:
        payload = _PAYLOAD.pack(_FORMAT, secrets.token_bytes(16), int(now if now is not None else time.time()))
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[0], payload))}"

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
        if not any(hmac.compare_digest(self._mac(key, payload), mac) for key in self._keys):
            raise TokenRefused("voter token signature is not valid")
        version, voter, issued_at = _PAYLOAD.unpack(payload)
        if version != _FORMAT:
            raise TokenRefused("unknown voter token format")
        if issued_at + self._ttl_s < (now if now is not None else time.time()):
            raise TokenRefused("voter token has expired; ask for a new one")
        return bytes(voter)


class Hasher:
    """Keyed hashes of voters and client addresses."""

    def __init__(self, key: bytes) -> None:
        self._voter_key = hmac.new(key, b"shipskip/voter", hashlib.sha256).digest()
        self._client_root = hmac.new(key, b"shipskip/client", hashlib.sha256).digest()
        self._client_day = ""
        self._client_key = b""

    def voter_id(self, voter: bytes) -> str:
        return hmac.new(self._voter_key, voter, hashlib.sha256).hexdigest()[:32]

    def client(self, address: str, now: datetime | None = None) -> str:
        day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
        if day != self._client_day:
            self._client_key = hmac.new(self._client_root, day.encode(), hashlib.sha256).digest()
            self._client_day = day
        return hmac.new(self._client_key, address.encode(), hashlib.sha256).hexdigest()[:32]
