"""Who is on the other end: the socket peer, or the address a trusted proxy put into X-Forwarded-For.

Only when the socket peer is one of the configured proxies is X-Forwarded-For read, from the right: every proxy
appends the address it received the request from, so the first entry (from the right) that is not a trusted
proxy is the client. Whatever the client wrote further left is ignored, as is the header from anyone else.
"""

import functools
import ipaddress
from collections.abc import Sequence

from services.shared.config import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(variable: str, items: Sequence[str]) -> list[Network]:
    networks: list[Network] = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{variable}: {item!r} is not an IP address or CIDR network") from None
    return networks


# Parsing an address and writing it out again cost a vote more than its HMAC (in-process profile): the same peers
# and proxies come again and again, so both are remembered (bounded: hostile X-Forwarded-For entries only evict).
@functools.lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[v6]" or "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _text(address: Address) -> str:
    return str(address)


class ClientAddresses:
    def __init__(self, trusted_proxies: Sequence[Network]) -> None:
        self._trusted = list(trusted_proxies)

    def _is_trusted(self, address: Address) -> bool:
        return any(address in network for network in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: Sequence[str]) -> str | None:
        """The client's address; ``forwarded_for`` holds every X-Forwarded-For header line, in order."""
        hop = _address(peer) if peer else None
        if hop is None:
            return peer
        if not self._trusted or not self._is_trusted(hop):
            return _text(hop)
        entries = [entry for line in forwarded_for for entry in line.split(",")]
        for entry in reversed(entries):
            address = _address(entry)
            if address is None:
                # Not an address: the proxy we trust did not write it, so stop at the last hop we can vouch for.
                break
            hop = address
            if not self._is_trusted(hop):
                break
        return _text(hop)
