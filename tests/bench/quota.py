"""Use the whole Bedrock quota and never exceed it: our limiter against the alternatives.

``make bench-quota`` (or ``python -m tests.bench.quota --jobs 1500 --quota-rpm 1200``).

Every scenario runs the real stack: Redis, 2 worker processes with threads, moto's S3, and the
Bedrock emulator enforcing a quota of Q requests per minute with 500 +- 200 ms latency.

  ours         our shared limiter configured at Q
  celery       Celery's own rate_limit at Q / 2 per worker process, no limiter of ours
  botocore     no limiter; botocore's adaptive retry mode
  misconfig    our limiter at Q, but the account's real quota is 20 % lower

Printed and written to ``out/bench-quota.json``: achieved rate over the steady window / Q,
throttled calls / calls, Bedrock calls / jobs, p50 and p99 job latency, jobs failed, and jobs
still unfinished when the scenario's time ran out (they stay queued; nothing is dropped).
Goal for "ours": >= 0.97 of Q, throttled <= 0.5 %, calls / jobs <= 1.01, nothing failed;
for "misconfig": throttled <= 5 %, every job final and none failed.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from devstack.processes import interrupt_on_signal, redis_answers
from devstack.stack import Stack, StackOptions
from imagegen.records import JobRecord, JobStatus
from producer.client import Client
from tests.support import emulator_stats

WORKER_PROCESSES = 2
BENCH_REDIS = "redis://127.0.0.1:6379/11"


@dataclass(frozen=True)
class Scenario:
    name: str
    limiter_rpm_factor: float  # our limiter's rate, as a part of Q (0: off)
    account_quota_factor: float  # the emulator's real quota, as a part of Q
    celery_rate_limit: bool = False
    botocore_adaptive: bool = False


SCENARIOS = (
    Scenario("ours", 1.0, 1.0),
    Scenario("celery", 0.0, 1.0, celery_rate_limit=True),
    Scenario("botocore", 0.0, 1.0, botocore_adaptive=True),
    Scenario("misconfig", 1.0, 0.8),
)


@dataclass
class Result:
    scenario: str
    jobs: int
    achieved_of_quota: float
    throttled_ratio: float
    calls_per_job: float
    latency_p50_s: float
    latency_p99_s: float
    failed: int
    unfinished: int
    wall_s: float


def run_scenario(scenario: Scenario, quota_rpm: float, jobs: int, threads: int) -> Result:
    env = {
        "IMAGEGEN_RATE_LIMIT_RPM": f"{quota_rpm * scenario.limiter_rpm_factor:g}",
        "IMAGEGEN_WORKER_CONCURRENCY": str(threads),
    }
    if scenario.celery_rate_limit:
        env["IMAGEGEN_CELERY_RATE_LIMIT"] = f"{quota_rpm / WORKER_PROCESSES:g}/m"
    if scenario.botocore_adaptive:
        env["IMAGEGEN_BEDROCK_BOTOCORE_RETRIES"] = "adaptive"
    account_rpm = quota_rpm * scenario.account_quota_factor
    redis_url = None
    if redis_answers(BENCH_REDIS):
        redis.Redis.from_url(BENCH_REDIS).flushdb()
        redis_url = BENCH_REDIS
    options = StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix=f"bench-{scenario.name}-")),
        redis_url=redis_url,
        force_private_redis=redis_url is None,
        worker_concurrency=threads,
        workers=tuple((f"bench{i}", "interactive,batch") for i in range(WORKER_PROCESSES)),
        quota_rpm=account_rpm,
        quota_burst=max(1.0, account_rpm / 60),  # one second's worth, like the emulator default
        emulator_args=("--latency-ms", "500", "--latency-jitter-ms", "200", "--fault-seed", "1"),
        extra_env=env,
    )
    with Stack(options) as stack:
        with Client(stack.settings()) as client:
            started = time.monotonic()
            submitted = client.submit_many(
                client.spec(f"benchmark picture {i}", priority="batch") for i in range(jobs)
            )
            records = wait_all(client, [job.job_id for job in submitted], jobs, quota_rpm)
            wall_s = time.monotonic() - started
        stats = emulator_stats(stack.urls["bedrock"])
    return summarise(
        scenario.name, records, jobs=jobs, quota_rpm=quota_rpm, stats=stats, wall_s=wall_s
    )


def wait_all(client: Client, job_ids: list[str], jobs: int, quota_rpm: float) -> list[JobRecord]:
    deadline = time.monotonic() + 120 + 4 * 60 * jobs / quota_rpm
    last_report = 0.0
    while True:
        records = [r for r in client.get_many(job_ids) if r is not None]
        done = sum(r.is_terminal for r in records)
        if done == len(job_ids) or time.monotonic() > deadline:
            return records
        if time.monotonic() - last_report > 10:
            print(f"    {done}/{len(job_ids)} done", flush=True)
            last_report = time.monotonic()
        time.sleep(0.5)


def summarise(
    name: str,
    records: list[JobRecord],
    *,
    jobs: int,
    quota_rpm: float,
    stats: dict[str, Any],
    wall_s: float,
) -> Result:
    succeeded = [r for r in records if r.status is JobStatus.SUCCEEDED and r.finished_at]
    finished = sorted(r.finished_at.timestamp() for r in succeeded if r.finished_at)
    # The steady window leaves out the first and last tenth of completions (ramp up, tail).
    low, high = int(len(finished) * 0.1), int(len(finished) * 0.9) - 1
    window_s = finished[high] - finished[low] if high > low else 0.0
    achieved_rpm = (high - low) / window_s * 60 if window_s > 0 else 0.0
    latencies = sorted(
        (r.finished_at - r.created_at).total_seconds() for r in succeeded if r.finished_at
    )
    requests = max(int(stats["requests"]), 1)
    return Result(
        scenario=name,
        jobs=jobs,
        achieved_of_quota=round(achieved_rpm / quota_rpm, 4),
        throttled_ratio=round(int(stats["throttled"]) / requests, 4),
        calls_per_job=round(requests / jobs, 4),
        latency_p50_s=round(statistics.median(latencies), 2) if latencies else 0.0,
        latency_p99_s=round(latencies[max(0, int(len(latencies) * 0.99) - 1)], 2)
        if latencies
        else 0.0,
        failed=sum(r.status is JobStatus.FAILED for r in records),
        unfinished=jobs - sum(r.is_terminal for r in records),
        wall_s=round(wall_s, 1),
    )


def print_table(results: list[Result], quota_rpm: float) -> None:
    print(
        f"\nQuota Q = {quota_rpm:g}/min, latency 500 +- 200 ms, {WORKER_PROCESSES} worker processes"
    )
    header = (
        "scenario",
        "rate/Q",
        "throttled",
        "calls/job",
        "p50 s",
        "p99 s",
        "failed",
        "unfinished",
        "wall s",
    )
    rows = [header] + [
        (
            r.scenario,
            f"{r.achieved_of_quota:.3f}",
            f"{r.throttled_ratio:.2%}",
            f"{r.calls_per_job:.3f}",
            f"{r.latency_p50_s:.1f}",
            f"{r.latency_p99_s:.1f}",
            str(r.failed),
            str(r.unfinished),
            f"{r.wall_s:.0f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def verdicts(results: list[Result]) -> list[str]:
    found = []
    for r in results:
        if r.scenario == "ours":
            ok = (
                r.achieved_of_quota >= 0.97
                and r.throttled_ratio <= 0.005
                and r.calls_per_job <= 1.01
                and r.failed == 0
                and r.unfinished == 0
            )
            found.append(
                f"ours: goal (>= 0.97 Q, <= 0.5 % throttled, <= 1.01 calls/job, "
                f"0 failed) {'MET' if ok else 'NOT MET'}"
            )
        if r.scenario == "misconfig":
            ok = r.throttled_ratio <= 0.05 and r.unfinished == 0 and r.failed == 0
            found.append(
                "misconfig: goal (<= 5 % throttled, every job final, none failed) "
                + ("MET" if ok else "NOT MET")
            )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quota-rpm", type=float, default=1200)
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=16, help="per worker process")
    parser.add_argument("--only", nargs="*", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--out", default="out/bench-quota.json")
    args = parser.parse_args(argv)
    # A terminated benchmark still stops the stack it started.
    signal.signal(signal.SIGTERM, interrupt_on_signal)

    results = []
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        print(f"== {scenario.name}: {args.jobs} jobs", flush=True)
        results.append(run_scenario(scenario, args.quota_rpm, args.jobs, args.threads))
        print(f"   {asdict(results[-1])}", flush=True)
    print_table(results, args.quota_rpm)
    lines = verdicts(results)
    for line in lines:
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "quota_rpm": args.quota_rpm,
                "jobs": args.jobs,
                "results": [asdict(r) for r in results],
                "verdicts": lines,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")
    return 0 if all(line.endswith("MET") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
