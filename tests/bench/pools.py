"""Bedrock pools under load, on the real stack: three pools against one pool of the same summed
quota, and a pool going down in the middle.

``make bench-pools`` (or ``python -m tests.bench.pools``). Every run: Redis, 2 worker processes
with 16 threads, moto's S3 and the Bedrock emulator with 500 +- 200 ms latency; tenants as in
``bench-fair``: A submits a flood at t = 0, B, C and D one job per second each for
``--duration-s``.

  pools          three pools (three Regions on the emulator) of Q = ``--quota-rpm`` each
  outage-503     the same; one pool answers 503 for 60 s in the middle
  outage-denied  the same; one pool answers AccessDeniedException for 60 s in the middle
  one-pool       the baseline: one pool (the implicit one) of 3 Q

Printed and written to ``out/bench-pools.json``: the rate of successful calls while every tenant
is active as a fraction of the summed quota (during an outage, also of the quota of the pools that
were up), throttled / calls, calls / job, the light tenants'
(B, C, D) wait p99, Jain's index over achieved / max-min fair shares; for the outages, jobs
failed, how long after the outage began until the other pools carried its share (their summed
quota, 95 % of it over 5 s), how long until calls to it stopped (its circuit opened: the first
2 s without one), calls to the pool while it was down and the extra calls. Goals:
>= 0.98 of the summed quota, <= 0.5 % throttled, <= 1.01 calls per job, light tenants' wait p99
<= 5 s, 0 jobs failed during an outage, the others carrying its share within 10 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import redis

from devstack.processes import interrupt_on_signal, redis_answers
from devstack.stack import EmulatedPool, Stack, StackOptions
from imagegen.redis import keys
from producer.client import Client
from tests.support import emulator_stats

SCENARIOS = ("pools", "outage-503", "outage-denied", "one-pool")
REGIONS = ("us-west-2", "us-east-1", "us-east-2")
SMALL = ("B", "C", "D")
WINDOW_START_S = 10.0
OUTAGE_S = 60.0
CARRY_WINDOW_S = 5.0
SUBMIT_CHUNK = 1000
GOALS = {
    "rate": 0.98,
    "throttled": 0.005,
    "calls_per_job": 1.01,
    "light_wait_p99_s": 5.0,
    "carry_s": 10.0,
}


def pools_of(args: argparse.Namespace) -> tuple[EmulatedPool, ...]:
    return tuple(
        # The dispatcher paces each pool evenly (burst 1): the emulator's one second of burst
        # absorbs the timing jitter, as Bedrock's does.
        EmulatedPool(f"p{i + 1}", region, args.quota_rpm, burst=1.0)
        for i, region in enumerate(REGIONS)
    )


def stack_options(scenario: str, args: argparse.Namespace) -> StackOptions:
    url = os.environ.get("IMAGEGEN_BENCH_REDIS")
    if url and redis_answers(url):
        redis.Redis.from_url(url).flushdb()
    else:
        url = None
    summed = args.quota_rpm * len(REGIONS)
    pooled = scenario != "one-pool"
    return StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix=f"bench-pools-{scenario}-")),
        redis_url=url,
        force_private_redis=url is None,
        worker_concurrency=args.threads,
        workers=tuple((f"pools{i}", "interactive,batch") for i in range(2)),
        # One pool of 3 Q: the model's own quota; three pools: each its own (the emulator
        # then has no quota of its own).
        quota_rpm=0 if pooled else summed,
        quota_burst=max(1.0, (args.quota_rpm if pooled else summed) / 60),
        emulator_args=("--latency-ms", "500", "--latency-jitter-ms", "200", "--fault-seed", "1"),
        extra_env={
            "IMAGEGEN_WORKER_CONCURRENCY": str(args.threads),
            "IMAGEGEN_MAX_QUEUED_PER_TENANT": "1000000",
            "IMAGEGEN_MAX_QUEUED_TOTAL": "1000000",
            "IMAGEGEN_RETRY_BASE_S": "0.2",
            "IMAGEGEN_RETRY_CAP_S": "2",
            "IMAGEGEN_POOL_CIRCUIT_OPEN_S": "10",
        },
        pools=pools_of(args) if pooled else (),
    )


def set_pool(stack: Stack, region: str, behaviour: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{stack.urls['bedrock']}/_emulator/pools/{region}",
        data=json.dumps(behaviour).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


class Outage(threading.Thread):
    """Takes the first pool down from ``start_s`` for OUTAGE_S (503s or access denied)."""

    def __init__(self, stack: Stack, kind: str, t0: float, start_s: float, args: Any) -> None:
        super().__init__(daemon=True)
        self.stack, self.kind, self.t0, self.start_s = stack, kind, t0, start_s
        self.model_id = stack.settings().model_id
        self.normal = {"quota_rpm": args.quota_rpm, "quota_burst": max(1.0, args.quota_rpm / 60)}

    def run(self) -> None:
        time.sleep(max(0.0, self.t0 + self.start_s - time.time()))
        down: dict[str, Any] = dict(self.normal)
        if self.kind == "503":
            down["fault_rates"] = {"unavailable": 1.0}
        else:
            down["denied_models"] = [self.model_id]
        set_pool(self.stack, REGIONS[0], down)
        print(f"    t = {time.time() - self.t0:.0f} s: pool p1 down ({self.kind})", flush=True)
        time.sleep(max(0.0, self.t0 + self.start_s + OUTAGE_S - time.time()))
        set_pool(self.stack, REGIONS[0], self.normal)
        print(f"    t = {time.time() - self.t0:.0f} s: pool p1 back", flush=True)


def records_and_calls(
    client: Client, stack: Stack, job_ids: list[str]
) -> tuple[list[Any], dict[str, list[dict[str, Any]]]]:
    records = []
    for start in range(0, len(job_ids), 2000):
        records += [r for r in client.get_many(job_ids[start : start + 2000]) if r is not None]
    connection = redis.Redis.from_url(stack.env["IMAGEGEN_REDIS_URL"], decode_responses=True)
    calls: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(job_ids), 2000):
        chunk = job_ids[start : start + 2000]
        pipe = connection.pipeline(transaction=False)
        for job_id in chunk:
            pipe.hget(keys.job_key(job_id), "calls")
        for job_id, raw in zip(chunk, pipe.execute(), strict=True):
            calls[job_id] = [json.loads(line) for line in str(raw or "").splitlines()]
    connection.close()
    return records, calls


def run_scenario(scenario: str, args: argparse.Namespace) -> dict[str, Any]:
    summed = args.quota_rpm * len(REGIONS)
    duration = args.duration_s
    flood = math.ceil((summed / 60 - len(SMALL)) * duration * 1.05)
    with Stack(stack_options(scenario, args)) as stack, Client(stack.settings()) as client:
        t0 = time.time()
        outage_start = (duration - OUTAGE_S) / 2
        if scenario.startswith("outage-"):
            Outage(stack, scenario.removeprefix("outage-"), t0, outage_start, args).start()
        tenants: dict[str, list[str]] = {"A": []}
        for start in range(0, flood, SUBMIT_CHUNK):
            specs = [
                client.spec(f"flood {i}") for i in range(start, min(flood, start + SUBMIT_CHUNK))
            ]
            tenants["A"] += [job.job_id for job in client.submit_many(specs, tenant="A")]
        print(f"    flood of {flood} submitted in {time.time() - t0:.1f} s", flush=True)
        for tenant in SMALL:
            tenants[tenant] = []
        for second in range(int(duration)):
            pause = t0 + second + 0.5 - time.time()
            if pause > 0:
                time.sleep(pause)
            for tenant in SMALL:
                tenants[tenant].append(client.submit(f"{tenant} {second}", tenant=tenant).job_id)
            if second % 30 == 0:
                print(f"    t = {second} s", flush=True)
        everyone = [job_id for ids in tenants.values() for job_id in ids]
        deadline = time.time() + 60 + 2 * 60 * len(everyone) / summed
        while time.time() < deadline:
            found, _ = records_and_calls(client, stack, everyone[-500:])
            if all(r.is_terminal for r in found):
                break
            time.sleep(5)
        records, calls = records_and_calls(client, stack, everyone)
        stats = emulator_stats(stack.urls["bedrock"])
    tenant_of = {job_id: tenant for tenant, ids in tenants.items() for job_id in ids}
    return measure(scenario, args, t0, outage_start, records, calls, tenant_of, stats)


def measure(  # noqa: PLR0917 - one run's facts, named at the one call
    scenario: str,
    args: argparse.Namespace,
    t0: float,
    outage_start: float,
    records: list[Any],
    calls: dict[str, list[dict[str, Any]]],
    tenant_of: dict[str, str],
    stats: dict[str, Any],
) -> dict[str, Any]:
    summed = args.quota_rpm * len(REGIONS)
    window = (WINDOW_START_S, float(args.duration_s))
    # Successful calls (images) by second since t0, by pool and by tenant.
    succeeded: list[tuple[float, str, str]] = []
    for job_id, found in calls.items():
        for call in found:
            if call["outcome"] in ("image", "filtered"):
                succeeded.append((call["at"] / 1000 - t0, call["pool"], tenant_of[job_id]))
    in_window = [s for s in succeeded if window[0] <= s[0] < window[1]]
    span = window[1] - window[0]
    rate = len(in_window) / span / (summed / 60)
    per_tenant = Counter(tenant for _, _, tenant in in_window)
    fair = dict.fromkeys(SMALL, 1.0)
    fair["A"] = summed / 60 - len(SMALL)
    shares = [per_tenant[t] / span / fair[t] for t in fair]
    jain = sum(shares) ** 2 / (len(shares) * sum(x * x for x in shares)) if any(shares) else 0.0
    light = sorted(
        (r.started_at - r.created_at).total_seconds()
        for r in records
        if r.started_at and tenant_of[r.job_id] in SMALL
    )
    jobs = len(records)
    result: dict[str, Any] = {
        "scenario": scenario,
        "jobs": jobs,
        "failed": sum(1 for r in records if r.status.value == "failed"),
        "not_final": sum(1 for r in records if not r.is_terminal),
        "rate_of_summed_quota": round(rate, 4),
        "throttled_share": round(stats["throttled"] / max(1, stats["requests"]), 5),
        "calls_per_job": round(stats["requests"] / max(1, jobs), 4),
        "light_wait_p99_s": round(light[min(len(light) - 1, int(len(light) * 0.99))], 3)
        if light
        else None,
        "jain": round(jain, 4),
        "by_pool": dict(Counter(pool for _, pool, _ in in_window)),
        "emulator_pools": stats.get("pools", {}),
    }
    if scenario.startswith("outage-"):
        # What the pools could serve in the window with one of them down for the outage.
        down = max(0.0, min(window[1], outage_start + OUTAGE_S) - max(window[0], outage_start))
        available = (summed * span - args.quota_rpm * down) / 60
        down_calls_at = sorted(
            call["at"] / 1000 - t0 - outage_start
            for found in calls.values()
            for call in found
            if call["pool"] == "p1" and 0 <= call["at"] / 1000 - t0 - outage_start < OUTAGE_S
        )
        # Until its circuit opened: the first gap of 2 s between calls to it.
        stopped = next(
            (a for a, b in pairwise(down_calls_at) if b - a >= 2.0),
            down_calls_at[-1] if down_calls_at else 0.0,
        )
        others = summed - args.quota_rpm
        need = 0.95 * CARRY_WINDOW_S * others / 60
        times = sorted(t for t, pool, _ in succeeded if pool != "p1")
        carry = None
        second = outage_start
        while second < outage_start + OUTAGE_S:
            count = sum(1 for t in times if second <= t < second + CARRY_WINDOW_S)
            if count >= need:
                carry = round(second - outage_start, 1)
                break
            second += 0.5
        down_calls = sum(
            1
            for found in calls.values()
            for call in found
            if call["pool"] == "p1"
            and outage_start <= call["at"] / 1000 - t0 < outage_start + OUTAGE_S
        )
        result.update(
            {
                "rate_of_available_quota": round(len(in_window) / available, 4),
                "down_pool_stopped_s": round(stopped, 2),
                "carry_s": carry,
                "calls_to_the_down_pool": down_calls,
                "extra_calls": stats["requests"] - jobs,
            }
        )
    return result


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    lines = []

    def say(ok: bool, text: str) -> None:
        lines.append(f"{'MET' if ok else 'NOT MET'}: {text}")

    for r in results:
        if r["scenario"] == "one-pool":
            continue
        name = r["scenario"]
        if name.startswith("outage-"):
            # One pool is down for part of the window: its quota then is not there to use.
            say(
                r["rate_of_available_quota"] >= GOALS["rate"],
                f"{name} rate >= 0.98 of the quota the pools up could give",
            )
        else:
            say(
                r["rate_of_summed_quota"] >= GOALS["rate"],
                f"{name} rate >= 0.98 of the summed quota",
            )
        say(r["throttled_share"] <= GOALS["throttled"], f"{name} <= 0.5 % throttled")
        if name == "pools":
            say(r["calls_per_job"] <= GOALS["calls_per_job"], f"{name} <= 1.01 calls per job")
        p99 = r["light_wait_p99_s"]
        say(p99 is not None and p99 <= GOALS["light_wait_p99_s"], f"{name} light wait p99 <= 5 s")
        if name.startswith("outage-"):
            say(r["failed"] == 0 and r["not_final"] == 0, f"{name} 0 jobs failed")
            carry = r["carry_s"]
            say(carry is not None and carry <= GOALS["carry_s"], f"{name} others carry within 10 s")
    return lines


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        "scenario",
        "jobs",
        "failed",
        "rate/sumQ",
        "throttled",
        "calls/job",
        "light p99 s",
        "Jain",
        "rate/up Q",
        "carry s",
        "down pool off s",
        "calls to down pool",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                r["scenario"],
                str(r["jobs"]),
                str(r["failed"]),
                f"{r['rate_of_summed_quota']:.3f}",
                f"{100 * r['throttled_share']:.2f} %",
                f"{r['calls_per_job']:.3f}",
                "-" if r["light_wait_p99_s"] is None else f"{r['light_wait_p99_s']:.2f}",
                f"{r['jain']:.3f}",
                "-"
                if "rate_of_available_quota" not in r
                else f"{r['rate_of_available_quota']:.3f}",
                "-" if r.get("carry_s") is None else f"{r['carry_s']:.1f}",
                "-" if "down_pool_stopped_s" not in r else f"{r['down_pool_stopped_s']:.1f}",
                str(r.get("calls_to_the_down_pool", "-")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.pools")
    parser.add_argument("--quota-rpm", type=float, default=600.0, help="Q of each pool")
    parser.add_argument("--duration-s", type=float, default=150.0)
    parser.add_argument("--threads", type=int, default=16, help="per worker process (two)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default="out/bench-pools.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupt_on_signal)
    results = []
    for scenario in args.scenarios.split(","):
        print(f"{scenario}:", flush=True)
        results.append(run_scenario(scenario, args))
    print()
    print_table(results)
    lines = verdicts(results)
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"quota_rpm_per_pool": args.quota_rpm, "pools": len(REGIONS)}
    report = {"settings": {**settings, "duration_s": args.duration_s}, "results": results}
    out.write_text(json.dumps({**report, "verdicts": lines}, indent=2))
    return 0 if all(line.startswith("MET") for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
