"""Which address a request is counted against: X-Forwarded-For only through trusted proxies, read from the right."""

import pytest

from services.shared.client_address import ClientAddresses, parse_networks
from services.shared.config import ConfigError

PROXIES = ClientAddresses(parse_networks("P", ["10.0.0.0/8", "192.168.1.1", "fd00::/8"]))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # The socket peer is the client when it is not a trusted proxy, whatever it claims.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", [], "203.0.113.9"),
        # Through one trusted proxy: the entry it appended.
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        # A client that sends its own X-Forwarded-For cannot hide behind it: the rightmost untrusted entry wins.
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),
        # A chain of trusted proxies is skipped.
        ("10.1.2.3", ["198.51.100.1, 192.168.1.1, 10.9.9.9"], "198.51.100.1"),
        # Ports and IPv6 forms.
        ("10.1.2.3", ["198.51.100.1:5555"], "198.51.100.1"),
        ("10.1.2.3", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("fd00::1", ["2001:db8::2"], "2001:db8::2"),
        ("::ffff:10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        # A trusted proxy without the header, or with garbage in it: the last hop we can vouch for.
        ("10.1.2.3", [], "10.1.2.3"),
        ("10.1.2.3", ["unknown"], "10.1.2.3"),
        ("10.1.2.3", ["nonsense, 10.4.4.4"], "10.4.4.4"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], client: str) -> None:
    assert PROXIES.resolve(peer, forwarded) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert ClientAddresses([]).resolve("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"
    assert ClientAddresses([]).resolve(None, ["198.51.100.1"]) is None


def test_bad_proxy_entries_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="SHIPSKIP_TRUSTED_PROXIES"):
        parse_networks("SHIPSKIP_TRUSTED_PROXIES", ["10.0.0.0/8", "proxy.internal"])
