"""One webhook POST with a total deadline: connecting, sending, and reading the answer
together take at most ``timeout_s``, however slowly the receiver trickles bytes.

The connection goes to the vetted address (never a second DNS lookup); TLS checks the
certificate against the URL's host. A watchdog shuts the socket down at the deadline, which
ends any read or write still waiting. Redirects are never followed.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from imagegen.ssrf import VettedTarget
from worker.retry import retry_after_s

__all__ = ["PostResult", "post_with_deadline"]

_READ_CHUNK_BYTES = 1024


@dataclass(frozen=True)
class PostResult:
    """A receiver's answer: its status (None when there was no full answer: then ``error``
    says why), what it said, and its Retry-After in seconds."""

    status: int | None
    latency_ms: int
    excerpt: str
    retry_after_s: float | None
    error: str | None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: VettedTarget, timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: VettedTarget, timeout_s: float, tls: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s, context=tls)
        self._address = target.address
        self._tls = tls

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def post_with_deadline(
    target: VettedTarget,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float,
    max_response_bytes: int,
    tls: ssl.SSLContext,
) -> PostResult:
    """POST ``body`` to ``target``; whatever happens, return within about ``timeout_s``."""
    connection: http.client.HTTPConnection = (
        _PinnedHTTPSConnection(target, timeout_s, tls)
        if target.scheme == "https"
        else _PinnedHTTPConnection(target, timeout_s)
    )
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    started = time.perf_counter()
    watchdog = threading.Timer(timeout_s, cut)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = _read_capped(response, max_response_bytes)
        status, retry_after = response.status, retry_after_s(response.getheader("retry-after"))
    except (OSError, http.client.HTTPException, ValueError) as e:
        error = (
            f"timeout: no full answer within {timeout_s:g} s"
            if expired.is_set()
            else f"{type(e).__name__}: {e}"
        )
        return PostResult(None, _elapsed_ms(started), "", None, error)
    finally:
        watchdog.cancel()
        connection.close()
    if expired.is_set():
        error = f"timeout: no full answer within {timeout_s:g} s"
        return PostResult(None, _elapsed_ms(started), excerpt, None, error)
    return PostResult(status, _elapsed_ms(started), excerpt, retry_after, None)


def _read_capped(response: http.client.HTTPResponse, max_bytes: int) -> str:
    chunks: list[bytes] = []
    size = 0
    while size < max_bytes:
        chunk = response.read(min(_READ_CHUNK_BYTES, max_bytes - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
