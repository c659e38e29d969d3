"""Headers on every response of the API, the console and ``/docs``.

- ``Content-Security-Policy``: the console runs only its own script and style files (no inline
  script, style or event handler, nothing from another origin) and shows images only from
  itself and the S3 endpoint its presigned image URLs point at; API responses allow nothing at
  all; ``/docs`` sets its own (Swagger UI's files from this origin, its one inline script by
  hash). Every policy says ``frame-ancestors 'none'``.
- ``X-Frame-Options: DENY`` for browsers without ``frame-ancestors``; ``X-Content-Type-Options:
  nosniff``; ``Referrer-Policy: same-origin`` (no URL of ours reaches another site; not
  ``no-referrer``, with which a browser sends ``Origin: null`` on the console's own posts);
  ``Cross-Origin-Opener-Policy`` and ``Cross-Origin-Resource-Policy: same-origin``; a
  ``Permissions-Policy`` that turns off what no page here uses.
- ``Strict-Transport-Security`` when the browser came over https (directly, through a trusted
  proxy, or with ``console_secure_cookies``).

A header a route already set (``/docs``' policy) is kept.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegen.settings import Settings
from producer.api.proxies import public_scheme

__all__ = [
    "API_POLICY",
    "SecurityHeadersMiddleware",
    "console_policy",
    "docs_policy",
    "image_origins",
]

CONSOLE_PREFIX = "/console"
API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
ALWAYS: tuple[tuple[str, str], ...] = (
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
)
HSTS = ("strict-transport-security", "max-age=31536000")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def console_policy(image_origins: Sequence[str]) -> str:
    images = " ".join(["'self'", *image_origins])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def docs_policy(html: bytes) -> str:
    """Swagger UI's page: its files from this origin, its inline start-up script by hash, the
    data: images its stylesheet uses."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def image_origins(settings: Settings) -> tuple[str, ...]:
    """Where the console's presigned image URLs point: the origin botocore puts in a URL for
    the bucket (made without credentials, with the same endpoint and addressing), and on AWS
    the bucket's regional name too (S3 may redirect a new bucket there)."""
    config = Config(
        region_name=settings.aws_region,
        signature_version=UNSIGNED,
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    s3 = boto3.session.Session().client("s3", endpoint_url=settings.s3_endpoint_url, config=config)
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": settings.s3_bucket, "Key": "image"}
    )
    parts = urlsplit(url)
    found = [f"{parts.scheme}://{parts.netloc}"]
    if settings.s3_endpoint_url is None and parts.netloc.startswith(f"{settings.s3_bucket}."):
        found.append(f"https://{settings.s3_bucket}.s3.{settings.aws_region}.amazonaws.com")
    return tuple(dict.fromkeys(found))


class SecurityHeadersMiddleware:
    """Adds the headers above to every response (keeping any a route set itself)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, image_origins: Sequence[str]) -> None:
        self.app = app
        self.settings = settings
        self.console_policy = console_policy(image_origins)

    def _headers(self, scope: Scope) -> list[tuple[str, str]]:
        path: str = scope.get("path", "")
        console = path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/")
        policy = self.console_policy if console else API_POLICY
        headers = [("content-security-policy", policy), *ALWAYS]
        if public_scheme(HTTPConnection(scope), self.settings) == "https":
            headers.append(HSTS)
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self._headers(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in added:
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
