"""Attack: hold the API's connections with requests that never finish (slowloris: hundreds of
half-sent heads, a head trickled a byte at a time, a body that stops), or exhaust its memory
with one enormous header. Each slow connection is closed within seconds of the header timeout;
the enormous header is refused after its first kilobytes, not read whole; the API keeps
answering everyone else meanwhile."""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from tests.security.conftest import HEADER_TIMEOUT_S

pytestmark = pytest.mark.integration

SLACK_S = 3.0
HALF_SENT = 300


def address(stack: Stack) -> tuple[str, int]:
    parsed = urlparse(stack.urls["api"])
    assert parsed.hostname
    assert parsed.port
    return parsed.hostname, parsed.port


def connect(stack: Stack, first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(stack), timeout=5)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def closed_within(socks: list[socket.socket], limit_s: float) -> tuple[float, list[bytes]]:
    """Seconds until the server closed every socket (or ``limit_s``), and what each got."""
    started = time.monotonic()
    received = {sock.fileno(): b"" for sock in socks}
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    while selector.get_map() and time.monotonic() - started < limit_s:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if chunk:
                received[sock.fileno()] += chunk
            else:
                selector.unregister(sock)
    still_open = len(selector.get_map())
    assert still_open == 0, f"{still_open} connections still open after {limit_s:g} s"
    return time.monotonic() - started, list(received.values())


def api_pid(stack: Stack) -> int:
    found = subprocess.run(
        ["pgrep", "-f", f"uvicorn .*--port {address(stack)[1]} "],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1])


def test_half_sent_requests_are_closed_within_seconds(secure_stack: Stack) -> None:
    socks = [
        connect(secure_stack, b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: ")
        for _ in range(HALF_SENT)
    ]
    silent = [connect(secure_stack) for _ in range(50)]  # connected, never a byte
    try:
        with httpx.Client(base_url=secure_stack.urls["api"], timeout=5) as api:
            assert api.get("/healthz").status_code == 200  # others are served meanwhile
        took_s, answers = closed_within(socks + silent, HEADER_TIMEOUT_S + SLACK_S)
        assert took_s >= HEADER_TIMEOUT_S - 0.5
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[:HALF_SENT])
        assert all(a == b"" for a in answers[HALF_SENT:])
    finally:
        for sock in socks + silent:
            sock.close()


def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_timeout(secure_stack: Stack) -> None:
    """Each byte comes before any idle timeout would fire; the head's deadline still does."""
    sock = connect(secure_stack)
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: " + b"a" * 500
    answer = b""
    try:
        for byte in head:
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable:
                with contextlib.suppress(ConnectionResetError):
                    answer = sock.recv(4096)
                break
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.send(bytes([byte]))
        took_s = time.monotonic() - started
    finally:
        sock.close()
    assert took_s <= HEADER_TIMEOUT_S + SLACK_S, f"still sending after {took_s:.1f} s"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]


def test_a_body_that_stops_arriving_is_cut(secure_stack: Stack) -> None:
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    sock = connect(secure_stack, head + b'{"request": ')
    try:
        took_s, _ = closed_within([sock], HEADER_TIMEOUT_S + SLACK_S)
        assert took_s >= HEADER_TIMEOUT_S - 0.5
    finally:
        sock.close()


def test_an_enormous_header_is_refused_without_being_read_whole(secure_stack: Stack) -> None:
    pid = api_pid(secure_stack)
    rss_before = rss_kb(pid)
    sock = connect(secure_stack, b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Huge: ")
    chunk = b"a" * (1024 * 1024)
    sent = 0
    started = time.monotonic()
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 200 * len(chunk):
                sock.sendall(chunk)
                sent += len(chunk)
        assert time.monotonic() - started < 10
        assert sent < 50 * len(chunk), f"the server read {sent:,} bytes of one header"
        with contextlib.suppress(ConnectionResetError):
            answer = sock.recv(4096)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    finally:
        sock.close()
    assert rss_kb(pid) - rss_before < 20 * 1024  # under 20 MB more
    with httpx.Client(base_url=secure_stack.urls["api"], timeout=5) as api:
        big_but_allowed = {"X-Fine": "a" * 8000}
        assert api.get("/healthz", headers=big_but_allowed).status_code == 200
        too_big = api.get("/healthz", headers={"X-Too-Big": "a" * 20_000})
        assert too_big.status_code == 431
