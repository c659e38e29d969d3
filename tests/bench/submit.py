"""How fast jobs get onto the queue: our client and API against a plain Celery loop.

``make bench-submit``. No worker runs, so only submitting is measured; each path writes the
same thing a job needs (the baseline writes only the Celery message, no job record).

  celery apply_async   one Celery message per call (the baseline)
  Client.submit_many   validated records + messages, pipelined in chunks
  POST /v1/batches     the HTTP API, 1,000 jobs a request
  POST /v1/jobs        one job per request: latency on loopback (keep-alive)

Goals: submit_many >= 5,000 jobs/s, batches >= 1,000 jobs/s, single POST p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx
import redis
from celery import Celery

from devstack.processes import interrupt_on_signal, redis_answers
from devstack.stack import Stack, StackOptions
from imagegen.messages import GENERATE_TASK
from producer.client import Client

BENCH_REDIS = "redis://127.0.0.1:6379/8"
GOALS = {"submit_many": 5000.0, "batches": 1000.0, "single_p50_ms": 5.0}


def job(i: int) -> dict[str, Any]:
    return {
        "request": {"prompt": f"benchmark picture {i}", "aspect_ratio": "16:9"},
        "metadata": {"i": i},
    }


def bench_celery(redis_url: str, jobs: int) -> float:
    app = Celery("bench", broker=redis_url)
    app.conf.update(task_serializer="json", broker_connection_retry_on_startup=True)
    started = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for i in range(jobs):
            app.send_task(GENERATE_TASK, args=[f"celery-{i}"], queue="batch", producer=producer)
    return jobs / (time.perf_counter() - started)


def bench_submit_many(client: Client, jobs: int, chunk: int) -> float:
    started = time.perf_counter()
    for start in range(0, jobs, chunk):
        client.submit_many(job(i) for i in range(start, min(start + chunk, jobs)))
    return jobs / (time.perf_counter() - started)


def bench_batches(http: httpx.Client, headers: dict[str, str], jobs: int, size: int) -> float:
    started = time.perf_counter()
    for start in range(0, jobs, size):
        body = [job(i) for i in range(start, min(start + size, jobs))]
        response = http.post("/v1/batches", json=body, headers=headers)
        response.raise_for_status()
    return jobs / (time.perf_counter() - started)


def bench_single(http: httpx.Client, headers: dict[str, str], requests: int) -> list[float]:
    latencies = []
    for i in range(requests):
        body = json.dumps(job(i)).encode()
        started = time.perf_counter()
        response = http.post("/v1/jobs", content=body, headers=headers)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return sorted(latencies)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=1_000, help="single POSTs to time")
    parser.add_argument("--out", default="out/bench-submit.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)

    redis_url = BENCH_REDIS if redis_answers(BENCH_REDIS) else None
    if redis_url:
        redis.Redis.from_url(redis_url).flushdb()
    caps = {
        "IMAGEGEN_MAX_QUEUED_TOTAL": "100000000",
        "IMAGEGEN_MAX_QUEUED_PER_TENANT": "100000000",
        "IMAGEGEN_RATE_LIMIT_RPM": "0",
    }
    options = StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix="bench-submit-")),
        redis_url=redis_url,
        force_private_redis=redis_url is None,
        workers=(),
        extra_env=caps,
    )
    with Stack(options) as stack:
        url = stack.start_api()
        settings = stack.settings()
        with Client(settings) as client:
            _, key = client.api_keys.create("bench")
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            celery_rate = bench_celery(settings.redis_url, args.jobs)
            many_rate = bench_submit_many(client, args.jobs, chunk=1000)
            with httpx.Client(base_url=url, timeout=60) as http:
                batch_rate = bench_batches(http, headers, args.jobs, size=1000)
                latencies = bench_single(http, headers, args.single)
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    results = {
        "jobs": args.jobs,
        "celery_apply_async_per_s": round(celery_rate),
        "submit_many_per_s": round(many_rate),
        "batches_per_s": round(batch_rate),
        "single_post_p50_ms": round(p50, 2),
        "single_post_p99_ms": round(p99, 2),
    }
    met = {
        "submit_many": many_rate >= GOALS["submit_many"],
        "batches": batch_rate >= GOALS["batches"],
        "single_p50_ms": p50 <= GOALS["single_p50_ms"],
    }
    rows = [
        ("path", "jobs/s or latency", "goal", ""),
        ("celery apply_async loop (baseline)", f"{celery_rate:,.0f} jobs/s", "-", ""),
        (
            "Client.submit_many",
            f"{many_rate:,.0f} jobs/s",
            ">= 5,000",
            "MET" if met["submit_many"] else "NOT MET",
        ),
        (
            "POST /v1/batches (1,000 a request)",
            f"{batch_rate:,.0f} jobs/s",
            ">= 1,000",
            "MET" if met["batches"] else "NOT MET",
        ),
        (
            "POST /v1/jobs, one at a time",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms",
            "p50 <= 5 ms",
            "MET" if met["single_p50_ms"] else "NOT MET",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"\nSubmitting {args.jobs:,} jobs per path (no worker running)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": results, "met": met}, indent=2) + "\n")
    print(f"written to {out}")
    return 0 if all(met.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
