"""One run of ``make bench-fair`` on one version of the service (see ``tests/bench/fair.py``).

Run as a script, with ``PYTHONPATH`` naming the source tree under test first: the same driver
then measures today's tree and the FIFO baseline's, so it uses only what both offer (the embedded
stack, ``Client.submit_many``, ``Client.get_many``, the emulator's stats).

``--kind idle``: on an idle stack (no latency), one job every 100 ms: submit to start.
``--kind flood``: tenant A submits ``--flood`` jobs at t = 0 (``--flood-priority``), tenants B, C
and D submit one interactive job per second each for ``--duration-s``; every job is then waited
for. ``--kind memory``: one worker process with 64 threads and 64 calls in flight (the emulator
answers in 3.2 s at Q = 1200/min), its RSS sampled with a few thousand jobs waiting and again
with 100,000; Redis memory per waiting job from ``INFO memory``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from devstack.processes import redis_answers
from devstack.stack import Stack, StackOptions
from producer.client import Client
from tests.support import emulator_stats

BENCH_REDIS = "redis://127.0.0.1:6379/11"
SUBMIT_CHUNK = 1000
SMALL_TENANTS = ("B", "C", "D")


def worker_rss_mb(prefix: str) -> dict[str, float]:
    """RSS of the worker processes whose Celery hostname starts with ``prefix`` (from /proc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"--hostname" not in cmdline:
                continue
            hostname = cmdline[cmdline.index(b"--hostname") + 1].decode()
            if not hostname.startswith(prefix):
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[hostname] = int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            continue
    return found


class RssSampler(threading.Thread):
    def __init__(self, prefix: str) -> None:
        super().__init__(daemon=True)
        self.prefix = prefix
        self.max_mb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            sizes = worker_rss_mb(self.prefix)
            if sizes:
                self.max_mb = max(self.max_mb, *sizes.values())

    def stop(self) -> float:
        self._done.set()
        self.join(timeout=5)
        return round(self.max_mb, 1)


def stack_options(name: str, args: argparse.Namespace, workers: int, threads: int) -> StackOptions:
    redis_url = None
    if redis_answers(BENCH_REDIS):
        redis.Redis.from_url(BENCH_REDIS).flushdb()
        redis_url = BENCH_REDIS
    latency = {"memory": "3200", "idle": "0"}.get(args.kind, "500")
    jitter = () if args.kind in ("memory", "idle") else ("--latency-jitter-ms", "200")
    return StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix=f"bench-fair-{name}-")),
        redis_url=redis_url,
        force_private_redis=redis_url is None,
        worker_concurrency=threads,
        workers=tuple((f"{name}{i}", "interactive,batch") for i in range(workers)),
        quota_rpm=args.quota_rpm,
        quota_burst=max(1.0, args.quota_rpm / 60),  # one second's worth, like Bedrock's
        emulator_args=("--latency-ms", latency, *jitter, "--fault-seed", "1"),
        extra_env={
            "IMAGEGEN_WORKER_CONCURRENCY": str(threads),
            # Room for the memory run's 100,000 waiting jobs (the default caps are 10,000 a
            # tenant and 100,000 in all).
            "IMAGEGEN_MAX_QUEUED_PER_TENANT": "1000000",
            "IMAGEGEN_MAX_QUEUED_TOTAL": "1000000",
        },
    )


def submit_flood(client: Client, n: int, tenant: str, priority: str) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, SUBMIT_CHUNK):
        specs = [
            client.spec(f"flood picture {i}", priority=priority)
            for i in range(start, min(n, start + SUBMIT_CHUNK))
        ]
        ids += [job.job_id for job in client.submit_many(specs, tenant=tenant)]
    return ids


def records_of(client: Client, job_ids: list[str]) -> list[Any]:
    found = []
    for start in range(0, len(job_ids), 2000):
        found += [r for r in client.get_many(job_ids[start : start + 2000]) if r is not None]
    return found


def run_flood(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{args.system}{args.flood_priority[0]}"
    with Stack(stack_options(name, args, workers=2, threads=args.threads)) as stack:
        sampler = RssSampler(name)
        sampler.start()
        with Client(stack.settings()) as client:
            t0 = time.time()
            flood_ids = submit_flood(client, args.flood, "A", args.flood_priority)
            print(
                f"    flood of {len(flood_ids)} submitted in {time.time() - t0:.1f} s", flush=True
            )
            small: dict[str, list[str]] = {t: [] for t in SMALL_TENANTS}
            for second in range(int(args.duration_s)):
                pause = t0 + second + 0.5 - time.time()
                if pause > 0:
                    time.sleep(pause)
                for tenant in SMALL_TENANTS:
                    job = client.submit(f"{tenant} picture {second}", tenant=tenant)
                    small[tenant].append(job.job_id)
                if second % 30 == 0:
                    print(f"    t = {second} s", flush=True)
            all_ids = flood_ids + [i for ids in small.values() for i in ids]
            deadline = time.time() + 120 + 2 * 60 * len(all_ids) / args.quota_rpm
            while time.time() < deadline:
                done = sum(r.is_terminal for r in records_of(client, all_ids))
                if done == len(all_ids):
                    break
                print(f"    {done}/{len(all_ids)} done", flush=True)
                time.sleep(10)
            records = {
                "A": records_of(client, flood_ids),
                **{t: records_of(client, ids) for t, ids in small.items()},
            }
        stats = emulator_stats(stack.urls["bedrock"])
        rss = sampler.stop()
    return {
        "t0": t0,
        "jobs": {
            tenant: [
                {
                    "created": r.created_at.timestamp(),
                    "started": r.started_at.timestamp() if r.started_at else None,
                    "status": r.status.value,
                }
                for r in found
            ]
            for tenant, found in records.items()
        },
        "emulator": {"requests": stats["requests"], "throttled": stats["throttled"]},
        "worker_rss_max_mb": rss,
    }


def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{args.system}idle"
    options = stack_options(name, args, workers=2, threads=args.threads)
    with Stack(options) as stack, Client(stack.settings()) as client:
        for i in range(20):  # warm up: connections, scripts
            client.wait(client.submit(f"warm-up {i}").job_id, timeout_s=30)
        ids = []
        for i in range(args.idle_jobs):
            ids.append(client.submit(f"idle picture {i}").job_id)
            time.sleep(0.1)
        for job_id in ids:
            client.wait(job_id, timeout_s=30)
        records = records_of(client, ids)
    waits = sorted(
        (r.started_at - r.created_at).total_seconds() * 1000 for r in records if r.started_at
    )
    return {"queue_to_start_ms": waits}


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    name = f"{args.system}mem"
    options = stack_options(name, args, workers=1, threads=64)
    with Stack(options) as stack, Client(stack.settings()) as client:
        submit_flood(client, 4000, "A", "batch")
        time.sleep(20)  # 64 calls in flight, a few thousand waiting
        sampler = RssSampler(name)
        sampler.start()
        time.sleep(20)
        in_flight_small = emulator_stats(stack.urls["bedrock"])["in_flight"]
        rss_small = sampler.stop()
        server = redis.Redis.from_url(stack.env["IMAGEGEN_REDIS_URL"])
        before = int(server.info("memory")["used_memory"])
        submit_flood(client, args.waiting, "A", "batch")
        per_job = (int(server.info("memory")["used_memory"]) - before) / args.waiting
        time.sleep(20)
        sampler = RssSampler(name)
        sampler.start()
        time.sleep(20)
        in_flight_big = emulator_stats(stack.urls["bedrock"])["in_flight"]
        rss_big = sampler.stop()
    return {
        "rss_mb_64_in_flight": rss_small,
        "in_flight_then": in_flight_small,
        "rss_mb_with_waiting": rss_big,
        "in_flight_with_waiting": in_flight_big,
        "waiting": args.waiting,
        "redis_bytes_per_waiting_job": round(per_job),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", required=True)
    parser.add_argument("--kind", choices=["flood", "memory", "idle"], default="flood")
    parser.add_argument("--idle-jobs", type=int, default=300)
    parser.add_argument("--flood-priority", choices=["interactive", "batch"], default="interactive")
    parser.add_argument("--quota-rpm", type=float, default=1200)
    parser.add_argument("--flood", type=int, default=6000)
    parser.add_argument("--duration-s", type=float, default=240)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs = {"memory": run_memory, "idle": run_idle, "flood": run_flood}
    result = runs[args.kind](args)
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
