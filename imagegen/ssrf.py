"""Webhook URLs must never make our workers call into our own network.

A URL's form is part of the job contract (``parse_webhook_url``, no lookup). Where it leads is
checked when the job is submitted (once per distinct URL) and again right before each delivery
(DNS can change): the host is resolved once, every address it resolves to must be a public one,
and the delivery connects to the address that was checked, not to a second lookup.

Refused: loopback, private, link-local (169.254.169.254, the cloud metadata service, included),
CGNAT, multicast, reserved and unspecified addresses, IPv6 unique-local and link-local, and IPv4
hidden in IPv6 (mapped, 6to4, NAT64). Numeric spellings (``2130706433``, ``0x7f.1``,
``0177.0.0.1``) resolve to the address they mean and are judged as that address. Hosts in
``webhook_allowed_hosts`` skip the address check (a local receiver in development and tests).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from imagegen.errors import ImagegenError
from imagegen.settings import Settings
from imagegen.special_addresses import special_purpose

__all__ = [
    "VettedTarget",
    "WebhookUrl",
    "WebhookUrlError",
    "parse_webhook_url",
    "vet_configured",
    "vet_webhook_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_MAX_URL_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookUrlError(ImagegenError, ValueError):
    """The webhook URL is refused; the message says why."""


@dataclass(frozen=True)
class VettedTarget:
    """Where a delivery may connect: ``address`` was checked; ``host`` goes in the Host header
    and in TLS server-name checks."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: IPAddress) -> str | None:
    """Why this address may not be reached, or None when it is an ordinary public one (our own
    table of IANA's special-purpose blocks, the same on every Python)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = refusal(embedded)
            return f"it embeds {embedded}, and {inner}" if inner else f"{address} is IPv4 in IPv6"
    kind = special_purpose(address)
    return f"{address} is {kind}" if kind else None


@dataclass(frozen=True)
class WebhookUrl:
    """A webhook URL whose form is right; where it leads is not checked yet."""

    scheme: str
    host: str
    port: int
    path: str


def parse_webhook_url(url: str, *, allow_http: bool) -> WebhookUrl:
    """Check the form of ``url`` without any lookup; raise ``WebhookUrlError`` with the reason."""
    if len(url) > _MAX_URL_CHARS:
        msg = f"webhook URL is longer than {_MAX_URL_CHARS} characters"
        raise WebhookUrlError(msg)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        msg = f"webhook URL must be https (got {scheme or 'no scheme'!r})"
        raise WebhookUrlError(msg)
    if scheme == "http" and not allow_http:
        msg = "webhook URL must be https (plain http is turned off)"
        raise WebhookUrlError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "webhook URL must not carry credentials"
        raise WebhookUrlError(msg)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        msg = "webhook URL has no host"
        raise WebhookUrlError(msg)
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as e:
        msg = f"webhook URL has a bad port: {e}"
        raise WebhookUrlError(msg) from e
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookUrl(scheme=scheme, host=host, port=port, path=path)


def vet_webhook_url(
    url: str,
    *,
    allow_http: bool,
    allowed_hosts: tuple[str, ...] = (),
    allowed_ports: tuple[int, ...] = (),
) -> VettedTarget:
    """Check ``url``, resolve it once and check every address and the port; raise
    ``WebhookUrlError`` with the reason. Hosts in ``allowed_hosts`` skip both checks."""
    parsed = parse_webhook_url(url, allow_http=allow_http)
    host, port = parsed.host, parsed.port
    trusted = host.lower() in {h.lower() for h in allowed_hosts}
    ports = {_DEFAULT_PORTS["https"], *allowed_ports}
    if allow_http:
        ports.add(_DEFAULT_PORTS["http"])
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        msg = f"webhook host {host!r} does not resolve: {e}"
        raise WebhookUrlError(msg) from e
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not trusted:
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                msg = f"webhook host {host!r} is refused: {reason}"
                raise WebhookUrlError(msg)
    if not trusted and port not in ports:
        allowed = ", ".join(str(p) for p in sorted(ports))
        msg = f"webhook URL port {port} is not allowed (allowed: {allowed})"
        raise WebhookUrlError(msg)
    return VettedTarget(
        url=url,
        scheme=parsed.scheme,
        host=host,
        port=port,
        address=str(addresses[0]),
        path=parsed.path,
    )


def vet_configured(url: str, settings: Settings) -> VettedTarget:
    """``vet_webhook_url`` with the settings' http, host and port allowances."""
    return vet_webhook_url(
        url,
        allow_http=settings.webhook_allow_http,
        allowed_hosts=settings.webhook_allowed_hosts,
        allowed_ports=settings.webhook_allowed_ports,
    )
