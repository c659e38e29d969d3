"""Closed-loop HTTP load: N clients, each on one keep-alive connection, sending its next request
as soon as the last is answered, for a fixed time. Raw asyncio streams and requests built as
bytes, so the load generator's own cost stays small beside the server's on the same machine."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadResult", "run_load"]

# Builds the body of a client's n-th request.
BodyOf = Callable[[int, int], bytes]


@dataclass(frozen=True)
class LoadResult:
    clients: int
    seconds: float
    latencies_ms: list[float]  # sorted, the measured requests only
    statuses: Counter[int]
    answered: int  # warm-up included

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99(self) -> float:
        return self.latencies_ms[max(0, round(0.99 * len(self.latencies_ms)) - 1)]


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class _Run:
    """One load run: what each client sends, when counting starts and stops, what it saw."""

    url: str
    path: str
    headers: dict[str, str]
    body_of: BodyOf
    warm_until: float
    stop_at: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    answered: int = 0


async def _client(run: _Run, number: int) -> None:
    parts = urlsplit(run.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = f"POST {run.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in run.headers.items()
    )
    sent = 0
    try:
        while (now := time.perf_counter()) < run.stop_at:
            body = run.body_of(number, sent)
            sent += 1
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            status = await _read_response(reader)
            run.answered += 1
            if now >= run.warm_until:
                run.latencies.append((time.perf_counter() - now) * 1000)
                run.statuses[status] += 1
    finally:
        writer.close()


async def _load(run: _Run, clients: int) -> None:
    await asyncio.gather(*(_client(run, n) for n in range(clients)))


def run_load(
    url: str,
    path: str,
    *,
    headers: dict[str, str],
    body_of: BodyOf,
    clients: int,
    seconds: float,
    warmup_s: float = 1.0,
) -> LoadResult:
    """POST to ``url + path`` from ``clients`` connections for ``warmup_s`` (not counted), then
    for ``seconds``."""
    started = time.perf_counter()
    run = _Run(url, path, headers, body_of, started + warmup_s, started + warmup_s + seconds)
    asyncio.run(_load(run, clients))
    return LoadResult(clients, seconds, sorted(run.latencies), run.statuses, run.answered)
