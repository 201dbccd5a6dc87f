"""Voter tokens: signed, rotatable, expiring; hashes never reveal the voter."""

import base64
import hashlib
import hmac
import struct
import time

import pytest

from services.votes.identity import Hasher, TokenRefused, VoterTokens

OLD, NEW = b"old-key-0123456789abcdef", b"new-key-0123456789abcdef"


def test_a_token_verifies_to_its_voter_and_old_keys_still_verify_after_rotation() -> None:
    old = VoterTokens([OLD], ttl_s=3600)
    token = old.issue()
    voter = old.verify(token)
    rotated = VoterTokens([NEW, OLD], ttl_s=3600)
    assert rotated.verify(token) == voter
    assert rotated.verify(rotated.issue()) != voter
    with pytest.raises(TokenRefused, match="signature"):
        VoterTokens([NEW], ttl_s=3600).verify(token)


@pytest.mark.parametrize(
    "mangle", [lambda t: t[:-3], lambda t: t + "x", lambda t: "x" + t[1:], lambda t: "a.b", lambda t: ""]
)
def test_forged_and_truncated_tokens_are_refused(mangle: object) -> None:
    tokens = VoterTokens([OLD], ttl_s=3600)
    with pytest.raises(TokenRefused):
        tokens.verify(mangle(tokens.issue()))  # type: ignore[operator]


def test_expired_tokens_are_refused() -> None:
    tokens = VoterTokens([OLD], ttl_s=60)
    token = tokens.issue(now=1_000_000)
    assert tokens.verify(token, now=1_000_059)
    with pytest.raises(TokenRefused, match="expired"):
        tokens.verify(token, now=1_000_061)


def test_hashes_are_keyed_and_stable() -> None:
    a, b = Hasher(OLD), Hasher(NEW)
    assert a.voter_id(b"v" * 16) == a.voter_id(b"v" * 16) != b.voter_id(b"v" * 16)
    assert "127.0.0.1" not in a.client("127.0.0.1")


def test_tokens_and_hashes_are_the_documented_hmacs() -> None:
    # Tokens already handed out must still verify, and a voter's id must not change across versions: the
    # projector knows a voter's earlier verdict by it.
    payload = struct.pack(">B16sQ", 1, b"v" * 16, int(time.time()))
    mac = hmac.new(OLD, payload, hashlib.sha256).digest()[:16]
    token = b".".join(base64.urlsafe_b64encode(part).rstrip(b"=") for part in (payload, mac)).decode()
    assert VoterTokens([OLD], ttl_s=3600).verify(token) == b"v" * 16
    voter_key = hmac.new(OLD, b"shipskip/voter", hashlib.sha256).digest()
    assert Hasher(OLD).voter_id(b"v" * 16) == hmac.new(voter_key, b"v" * 16, hashlib.sha256).hexdigest()[:32]


def test_a_token_issued_beyond_the_clock_skew_is_refused() -> None:
    tokens = VoterTokens([OLD], ttl_s=3600, clock_skew_s=300)
    assert tokens.verify(tokens.issue(now=1_000_300), now=1_000_000)
    with pytest.raises(TokenRefused, match="future"):
        tokens.verify(tokens.issue(now=1_000_301), now=1_000_000)
    payload = struct.pack(">B16sQ", 1, b"v" * 16, 2**64 - 1)
    mac = hmac.new(OLD, payload, hashlib.sha256).digest()[:16]
    token = b".".join(base64.urlsafe_b64encode(part).rstrip(b"=") for part in (payload, mac)).decode()
    with pytest.raises(TokenRefused, match="future"):
        tokens.verify(token)


def test_a_token_verifies_in_its_one_spelling_only() -> None:
    tokens = VoterTokens([OLD], ttl_s=3600)
    token = tokens.issue()
    head, tail = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bit = alphabet[alphabet.index(tail[-1]) ^ 1]  # the last character's 2 low bits carry no data
    for spelling in (f"{token}=", f"{token}==", f"{head}=.{tail}", f"{head}.{tail[:-1]}{unused_bit}"):
        with pytest.raises(TokenRefused, match="spelling"):
            tokens.verify(spelling)
