"""How many InvokeModel requests per second the emulator serves (1:1 PNG, no latency).

``make bench-emulator``. The emulator runs as its own process, as in the local stack; the load
comes from another process over keep-alive HTTP connections. Target: at least 100 per second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from devstack.processes import ProcessGroup, free_port, http_ok, python_module

TARGET_PER_S = 100.0
BODY = json.dumps(
    {
        "prompt": "A modern minimalist workspace with natural lighting and plants",
        "aspect_ratio": "1:1",
        "output_format": "png",
    }
).encode()
PATH = "/model/stability.stable-image-core-v1%3A0/invoke"
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json",
    "Authorization": "AWS4-HMAC-SHA256 Credential=bench/...",
}


def hammer(port: int, seconds: float, results: list[float], errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        connection.request("POST", PATH, body=BODY, headers=HEADERS)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200 or b'"images":["' not in payload:
            errors.append(f"{response.status} {payload[:120]!r}")
            continue
        results.append(time.perf_counter() - started)
    connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)

    port = free_port()
    processes = ProcessGroup(Path(".imagegen/bench-logs"))
    try:
        processes.spawn(
            "emulator",
            python_module("emulator", "--port", str(port)),
            env=os.environ,
            ready=lambda: http_ok(f"http://127.0.0.1:{port}/_emulator/health"),
        )
        latencies: list[float] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=hammer, args=(port, args.seconds, latencies, errors))
            for _ in range(args.connections)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        processes.stop_all()

    rate = len(latencies) / elapsed
    latencies.sort()
    print(
        f"emulator throughput, 1:1 PNG, no latency, {args.connections} keep-alive connections, "
        f"{args.seconds:g} s"
    )
    print(f"  requests served   {len(latencies)}  (errors {len(errors)})")
    print(
        f"  requests/second   {rate:.1f}   target >= {TARGET_PER_S:g}  "
        f"{'MET' if rate >= TARGET_PER_S else 'NOT MET'}"
    )
    if latencies:
        print(
            f"  latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms"
        )
    for error in errors[:3]:
        print(f"  error: {error}")
    return 0 if rate >= TARGET_PER_S and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
