"""What waiting for a replica costs (``IMAGEGEN_REDIS_REPLICA_ACK``), on a real primary with one
replica on this machine, with the wait off and on:

- a submission (``Client.submit``): latency is one caller submitting one job at a time;
  throughput is 8 callers at once;
- a worker's writes for one job (claim, the call mark, which waits, and the final status with
  its booking, which waits), one job at a time, as a worker thread makes them around its
  Bedrock call (the dispatcher's release, which does not wait, is not timed).

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
from imagegen.records import JobStatus
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import CallMark, ClaimState, FinishOutcome, JobStore
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


def worker_writes_ms(client: Client, settings: Settings, jobs: int) -> list[float]:
    """Per job, the worker's writes around its call: claim, the call mark, the final status
    with its booking (each job released first, untimed)."""
    redis = client._redis
    store, dispatch = JobStore.from_settings(redis, settings), Dispatch(redis, settings)
    ids = [client.submit(f"worker {i}", tenant="bench").job_id for i in range(jobs)]
    model_id = client.get(ids[0]).model_id
    fields: dict[str, str | int | None] = {"seed": 1, "error_code": None}
    found = []
    for job_id in ids:
        deadline = time.monotonic() + 10
        while client.get(job_id).place != "released":  # the dispatcher's part: not timed
            dispatch.release(model_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"{job_id} was not released within 10 s")
        started = time.perf_counter()
        if store.claim(job_id, "bench-owner", 60_000).state is not ClaimState.CLAIMED:
            raise AssertionError(job_id)
        if store.mark_calling(job_id, "bench-owner", calling=True) is not CallMark.OK:
            raise AssertionError(job_id)
        finished = store.finish(job_id, "bench-owner", JobStatus.SUCCEEDED, fields, bought=True)
        if finished.outcome is not FinishOutcome.FINISHED:
            raise AssertionError(job_id)
        found.append((time.perf_counter() - started) * 1000)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    rows = [("replica wait", "p50 ms", "p99 ms", f"jobs/s ({CALLERS} callers)")]
    worker_rows = [("replica wait", "p50 ms", "p99 ms")]
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
                client._redis.flushdb()
                writes = worker_writes_ms(client, settings, args.jobs // 4)
            rows.append(
                (
                    mode,
                    f"{statistics.median(latency):.3f}",
                    f"{p99(latency):.3f}",
                    f"{rate:.0f}",
                )
            )
            worker_rows.append(
                (
                    mode,
                    f"{statistics.median(writes):.3f}",
                    f"{p99(writes):.3f}",
                )
            )
    print(f"{args.jobs} submissions per run; a primary and one replica on this machine")
    for row in rows:
        print(f"{row[0]:<13} {row[1]:>8} {row[2]:>8} {row[3]:>22}")
    print()
    print(
        f"a worker's writes for one job (claim, call mark, finish), {args.jobs // 4} jobs per run"
    )
    for mode, p50, worst in worker_rows:
        print(f"{mode:<13} {p50:>8} {worst:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
