"""What the image cache adds to a submission: ``Client.submit`` latency on a real Redis, for
random-seed jobs (no lookup: the baseline), fixed-seed jobs seen for the first time (a lookup
that misses; the job leads) and fixed-seed jobs already cached (a hit, served at once).

``make bench-cache`` (or ``python -m tests.bench.cache --jobs 3000``). No worker runs; the
cached images are written as a worker would. Goal: a lookup adds <= 1 ms p99 to a submit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import redis

from devstack.processes import redis_answers
from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.settings import Settings
from producer.client import Client

BENCH_REDIS = "redis://127.0.0.1:6379/9"


def timed(client: Client, prompts: list[dict[str, Any]]) -> tuple[list[float], int]:
    """Submit each job alone; the sorted latencies (ms) and how many were served cached."""
    latencies, cached = [], 0
    for request in prompts:
        started = time.perf_counter()
        record = client.submit(request, tenant="bench")
        latencies.append((time.perf_counter() - started) * 1000)
        cached += record.cached
    return sorted(latencies), cached


def p99(values: list[float]) -> float:
    return values[max(0, round(0.99 * len(values)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=3000)
    args = parser.parse_args()
    if not redis_answers(BENCH_REDIS):
        print(f"Redis at {BENCH_REDIS} does not answer", file=sys.stderr)
        return 2
    server = redis.Redis.from_url(BENCH_REDIS, decode_responses=True)
    server.flushdb()
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        redis_url=BENCH_REDIS,
        rate_limit_rpm=0,
        max_queued_total=10 * args.jobs,
        max_queued_per_tenant=10 * args.jobs,
    )
    with Client(settings) as client:
        timed(client, [{"prompt": f"warm-up {i}"} for i in range(200)])
        random_seed, _ = timed(client, [{"prompt": f"random {i}"} for i in range(args.jobs)])
        fixed = [{"prompt": f"fixed {i}", "seed": 1000 + i} for i in range(args.jobs)]
        misses, _ = timed(client, fixed)
        # What workers do for each leader: take its release, get its image; the entries fill.
        model_id = settings.model_id
        released = keys.dispatch_keys(model_id).released
        while client.dispatch.release(model_id).tenants_waiting or server.zcard(released):
            for job_id in server.zrange(released, 0, -1):
                client.jobs.claim(job_id, "bench", 60_000)
                client.jobs.finish(
                    job_id, "bench", JobStatus.SUCCEEDED, {"s3_bucket": "b", "s3_key": job_id}
                )
        hits, served = timed(client, fixed)
    print(f"{args.jobs} jobs per kind; {served} of the repeated fixed-seed jobs served cached")
    rows = [("submit", "p50 ms", "p99 ms")]
    kinds = (("random seed", random_seed), ("fixed, miss", misses), ("fixed, hit", hits))
    for name, values in kinds:
        rows.append((name, f"{statistics.median(values):.3f}", f"{p99(values):.3f}"))
    for row in rows:
        print(f"{row[0]:<12} {row[1]:>8} {row[2]:>8}")
    added = max(p99(misses), p99(hits)) - p99(random_seed)
    ok = added <= 1.0 and served == args.jobs
    verdict = "MET" if ok else "NOT MET"
    print(f"cache lookup adds {added:+.3f} ms p99 to a submit: goal (<= 1 ms) {verdict}")
    server.flushdb()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
