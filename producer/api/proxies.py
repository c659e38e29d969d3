"""What a request says about its browser, believed only from trusted proxies.

Behind the proxies ``api_trusted_proxies`` names, ``X-Forwarded-For`` names the client,
``X-Forwarded-Proto`` the scheme it used and ``X-Forwarded-Host`` the host it asked for. From
any other peer those headers are ignored: anyone can send them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import HTTPConnection

from imagegen.settings import Settings

__all__ = ["from_trusted_proxy", "is_trusted_proxy", "public_origin", "public_scheme"]

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def is_trusted_proxy(address: str, trusted_proxies: Sequence[str]) -> bool:
    """Whether ``address`` lies in one of ``trusted_proxies`` (addresses or CIDR blocks)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in ipaddress.ip_network(proxy, strict=False) for proxy in trusted_proxies)


def from_trusted_proxy(connection: HTTPConnection, settings: Settings) -> bool:
    """Whether the peer is one of the trusted proxies."""
    peer = connection.client.host if connection.client else ""
    return bool(settings.api_trusted_proxies) and is_trusted_proxy(
        peer, settings.api_trusted_proxies
    )


def _first(value: str) -> str:
    """The first of a comma-separated header's values: what the outermost proxy saw."""
    return value.split(",", 1)[0].strip().lower()


def public_scheme(connection: HTTPConnection, settings: Settings) -> str:
    """``https`` when the browser used https: the connection's own scheme, a trusted proxy's
    ``X-Forwarded-Proto``, or always with ``console_secure_cookies`` (the console is reached
    over https)."""
    if settings.console_secure_cookies or connection.url.scheme in {"https", "wss"}:
        return "https"
    forwarded = _first(connection.headers.get("x-forwarded-proto", ""))
    if forwarded == "https" and from_trusted_proxy(connection, settings):
        return "https"
    return "http"


def public_origin(connection: HTTPConnection, settings: Settings) -> str:
    """The origin the browser sees this service at (``scheme://host[:port]``), as its
    ``Origin`` header names it."""
    scheme = public_scheme(connection, settings)
    host = connection.headers.get("host", "")
    forwarded_host = _first(connection.headers.get("x-forwarded-host", ""))
    if forwarded_host and from_trusted_proxy(connection, settings):
        host = forwarded_host
    host = host.strip().lower().removesuffix(_DEFAULT_PORTS[scheme])
    return f"{scheme}://{host}"
