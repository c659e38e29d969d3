"""Helpers for tests: small real images, Bedrock answers, emulator counters."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from devstack.receiver import Receiver

__all__ = [
    "Receiver",
    "ScriptClock",
    "TrickleServer",
    "bedrock_payload",
    "emulator_stats",
    "image_bytes",
    "independent_signature_check",
    "kill_marked",
    "marked_processes",
]

from PIL import Image

PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class ScriptClock:
    """Every script run on ``redis`` from now on reads this clock (ms, from now or ``start_ms``)
    instead of the Redis server's; only ``tick`` moves it."""

    def __init__(self, redis: Any, start_ms: float | None = None) -> None:
        from imagegen.redis.scripts import Scripts

        self.now_ms = float(int(time.time() * 1000)) if start_ms is None else start_ms
        Scripts.of(redis).clock = lambda: self.now_ms

    def tick(self, ms: float) -> None:
        self.now_ms += ms


def image_bytes(fmt: str = "png", size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, format=PIL_NAMES[fmt])
    return out.getvalue()


def bedrock_payload(
    fmt: str = "png", seed: int = 1234, size: tuple[int, int] = (64, 48)
) -> dict[str, object]:
    """A successful Stable Image Core answer."""
    return {
        "seeds": [seed],
        "finish_reasons": [None],
        "images": [base64.b64encode(image_bytes(fmt, size)).decode()],
    }


def emulator_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]


def independent_signature_check(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks v1, written from the specification (not by calling our signer)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{lowered['webhook-id']}.{lowered['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1) for s in lowered["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(sig, expected) for version, sig in offered)


class TrickleServer:
    """A receiver that answers one byte at a time, for ever (headers or body)."""

    def __init__(self, *, in_headers: bool) -> None:
        self.in_headers = in_headers
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                if not self.in_headers:
                    conn.sendall(head)
                    head = b"x" * 100000
                for byte in head:
                    if self.stop.wait(0.1):
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


MARK_VARIABLE = "IMAGEGEN_TEST_STACK_MARK"


def marked_processes(mark: str) -> list[int]:
    """Processes started with ``IMAGEGEN_TEST_STACK_MARK={mark}`` in their environment: a
    stack a test started, and every process that stack started (they inherit it), wherever
    they were re-parented."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environment.split(b"\0"):
            found.append(int(entry.name))
    return found


def kill_marked(mark: str) -> list[int]:
    """SIGKILL what ``marked_processes`` finds (what a failed test left running); their ids."""
    found = marked_processes(mark)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found
