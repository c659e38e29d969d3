"""IANA's special-purpose address blocks, as our own table: which addresses a webhook may never
reach. Python's ``ipaddress`` flags (``is_private``, ``is_global``...) changed between patch
releases; this table does not, so the same URL is refused on every Python.

Sources: the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its updates),
plus multicast and the deprecated IPv6 site-local block. Every block is refused, even the few
IANA marks globally reachable (anycast services no webhook receiver lives on).
"""

from __future__ import annotations

import ipaddress

__all__ = ["SPECIAL_PURPOSE_BLOCKS", "special_purpose"]

_V4 = (
    ("0.0.0.0/8", "'this network'"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata lives there)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112 direct delegation"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
)
_V6 = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy prefix"),
    ("2001::/23", "IETF protocol assignments (Teredo included)"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", "AS112 direct delegation"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)

SPECIAL_PURPOSE_BLOCKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    tuple((ipaddress.ip_network(block), kind) for block, kind in (*_V4, *_V6))
)


def special_purpose(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The kind of special-purpose block ``address`` is in, or None for an ordinary one."""
    for network, kind in SPECIAL_PURPOSE_BLOCKS:
        if address.version == network.version and address in network:
            return kind
    return None
