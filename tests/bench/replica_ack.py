"""What waiting for a replica costs a submission (``IMAGEGEN_REDIS_REPLICA_ACK``): ``Client.submit``
on a real primary with one replica on this machine, with the wait off and on. Latency is one
caller submitting one job at a time; throughput is 8 callers at once.

``make bench-replica-ack`` (or ``python -m tests.bench.replica_ack --jobs 2000``). No worker runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from devstack.sentinel import SentinelCluster
from imagegen.settings import Settings
from producer.client import Client

CALLERS = 8
WARM_UP_JOBS = 200


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.99 * len(ordered)) - 1)]


def latencies_ms(client: Client, tag: str, jobs: int) -> list[float]:
    found = []
    for index in range(jobs):
        started = time.perf_counter()
        client.submit(f"{tag} {index}", tenant="bench")
        found.append((time.perf_counter() - started) * 1000)
    return found


def jobs_per_second(client: Client, tag: str, jobs: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(CALLERS) as pool:
        list(pool.map(lambda i: client.submit(f"{tag} {i}", tenant="bench"), range(jobs)))
    return jobs / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    rows = [("replica wait", "p50 ms", "p99 ms", f"jobs/s ({CALLERS} callers)")]
    with (
        tempfile.TemporaryDirectory() as run_dir,
        SentinelCluster(Path(run_dir), replicas=1, sentinels=0) as pair,
    ):
        for mode in ("off", "on", "off", "on"):  # twice each, interleaved
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                redis_url=pair.primary_url,
                redis_replica_ack=mode,
                rate_limit_rpm=0,
                max_queued_total=100 * args.jobs,
                max_queued_per_tenant=100 * args.jobs,
            )
            with Client(settings) as client:
                client._redis.flushdb()
                latencies_ms(client, "warm-up", WARM_UP_JOBS)
                latency = latencies_ms(client, mode, args.jobs)
                rate = jobs_per_second(client, f"{mode}-parallel", args.jobs)
            rows.append(
                (
                    mode,
                    f"{statistics.median(latency):.3f}",
                    f"{p99(latency):.3f}",
                    f"{rate:.0f}",
                )
            )
    print(f"{args.jobs} submissions per run; a primary and one replica on this machine")
    for row in rows:
        print(f"{row[0]:<13} {row[1]:>8} {row[2]:>8} {row[3]:>22}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
