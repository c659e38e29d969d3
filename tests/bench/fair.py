"""Fair share under one quota: today's dispatcher against the FIFO queues it replaced, side by
side in one run, on the real stack.

``make bench-fair`` (or ``python -m tests.bench.fair``). Every run: Redis, 2 worker processes
with 16 threads, moto's S3, and the Bedrock emulator at Q = 1200/min with 500 +- 200 ms latency.

  same-class    tenant A submits 6,000 interactive jobs at t = 0; tenants B, C and D submit one
                interactive job per second each for 240 s
  batch-flood   the same, but A's flood is ``batch``: B, C and D's interactive jobs go first
  memory        one worker, 64 threads, 64 calls in flight: its RSS with a few thousand jobs
                waiting, then with 100,000; Redis memory per waiting job
  idle          an idle stack, one job every 100 ms: submit to start p50 and p99

``fifo`` is the service as of ``--baseline`` (the last version with FIFO Celery queues and the
worker-side limiter), checked out into a temporary git worktree and run by the same driver
(``tests/bench/fair_run.py``); ``dispatcher`` is this tree.

Printed and written to ``out/bench-fair.json``, per system and scenario: per tenant, queue wait
(submit to start) p50 and p99 and its share of the jobs started while all four were active
against its max-min fair share (B, C and D ask for 1/s each, A for the rest); Jain's index over
achieved / fair share; overall rate / Q over that window; throttled / calls; calls / jobs;
worker RSS. Goals for the dispatcher: B, C, D wait p99 <= 5 s; Jain's index >= 0.99; rate >= 0.99 Q
with <= 0.5 % throttled and <= 1.01 calls per job; worker RSS <= 150 MB with 64 calls in flight
and with 100,000 jobs waiting; idle submit to start p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from devstack.processes import interrupt_on_signal

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("fair_run.py")
# The last commit whose jobs waited in FIFO Celery queues, with the worker-side limiter.
FIFO_BASELINE = "23d7de02fd8764efe8655f091c0370858af37f60"
SCENARIOS = {"same-class": "interactive", "batch-flood": "batch"}
SMALL = ("B", "C", "D")
# The window "while all are active" starts after this many seconds (the flood is submitted).
WINDOW_START_S = 10.0


def checkout(rev: str) -> Path:
    target = Path(tempfile.mkdtemp(prefix="bench-fair-baseline-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(target), rev],
        check=True,
        capture_output=True,
    )
    return target


def remove_checkout(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
        check=False,
        capture_output=True,
    )


def run_driver(tree: Path, system: str, extra: list[str]) -> dict[str, Any] | None:
    """One run of the driver on ``tree``; None when it failed (its output says why)."""
    out = Path(tempfile.mkstemp(prefix=f"bench-fair-{system}-", suffix=".json")[1])
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, str(DRIVER), "--system", system, "--out", str(out), *extra],
        check=False,
        cwd=tree,
        env=env,
    )
    text = out.read_text()
    out.unlink()
    if done.returncode != 0 or not text:
        print(f"   {system} {extra[:2]}: the run failed (exit {done.returncode})", flush=True)
        return None
    result: dict[str, Any] = json.loads(text)
    return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summarise_flood(raw: dict[str, Any], quota_rpm: float, duration_s: float) -> dict[str, Any]:
    t0 = raw["t0"]
    window = (t0 + WINDOW_START_S, t0 + duration_s)
    window_s = window[1] - window[0]
    capacity = quota_rpm / 60
    fair = dict.fromkeys(SMALL, 1.0)
    fair["A"] = capacity - len(SMALL)
    tenants: dict[str, Any] = {}
    started_in_window = 0
    jobs_total = 0
    for tenant, jobs in raw["jobs"].items():
        jobs_total += len(jobs)
        waits = [j["started"] - j["created"] for j in jobs if j["started"] is not None]
        in_window = sum(
            1 for j in jobs if j["started"] is not None and window[0] <= j["started"] < window[1]
        )
        started_in_window += in_window
        tenants[tenant] = {
            "jobs": len(jobs),
            "unfinished": sum(j["status"] in ("queued", "running") for j in jobs),
            "wait_p50_s": round(percentile(waits, 0.5), 3),
            "wait_p99_s": round(percentile(waits, 0.99), 3),
            "rate_per_s": round(in_window / window_s, 3),
        }
    for tenant, found in tenants.items():
        found["share"] = round(found["rate_per_s"] * window_s / max(started_in_window, 1), 4)
        found["fair_share"] = round(fair[tenant] / capacity, 4)
    ratios = [tenants[t]["rate_per_s"] / fair[t] for t in tenants]
    jain = sum(ratios) ** 2 / (len(ratios) * sum(r * r for r in ratios)) if any(ratios) else 0.0
    requests = max(int(raw["emulator"]["requests"]), 1)
    return {
        "tenants": tenants,
        "jain_index": round(jain, 4),
        "rate_of_quota": round(started_in_window / window_s / capacity, 4),
        "throttled_ratio": round(int(raw["emulator"]["throttled"]) / requests, 4),
        "calls_per_job": round(requests / max(jobs_total, 1), 4),
        "worker_rss_max_mb": raw["worker_rss_max_mb"],
    }


def print_tables(results: dict[str, Any]) -> None:
    for scenario in SCENARIOS:
        if not any(scenario in by_scenario for by_scenario in results.values()):
            continue
        print(f"\n{scenario}:")
        header = ("system", "tenant", "wait p50 s", "wait p99 s", "share", "fair", "unfinished")
        rows = [header]
        summary = [("system", "Jain", "rate/Q", "throttled", "calls/job", "worker RSS MB")]
        for system, by_scenario in results.items():
            found = by_scenario.get(scenario)
            if not found:
                continue
            for tenant, t in found["tenants"].items():
                rows.append(
                    (
                        system,
                        tenant,
                        f"{t['wait_p50_s']:.2f}",
                        f"{t['wait_p99_s']:.2f}",
                        f"{t['share']:.3f}",
                        f"{t['fair_share']:.3f}",
                        str(t["unfinished"]),
                    )
                )
            summary.append(
                (
                    system,
                    f"{found['jain_index']:.4f}",
                    f"{found['rate_of_quota']:.3f}",
                    f"{found['throttled_ratio']:.2%}",
                    f"{found['calls_per_job']:.3f}",
                    f"{found['worker_rss_max_mb']:.0f}",
                )
            )
        table(rows)
        print()
        table(summary)
    print("\nidle, submit to start:")
    rows = [("system", "p50 ms", "p99 ms", "jobs")]
    for system, by_scenario in results.items():
        found = by_scenario.get("idle")
        if found:
            rows.append(
                (system, f"{found['p50_ms']:.1f}", f"{found['p99_ms']:.1f}", str(found["jobs"]))
            )
    table(rows)
    print("\nmemory:")
    rows = [("system", "RSS MB, 64 in flight", "RSS MB, +100k waiting", "Redis B/waiting job")]
    for system, by_scenario in results.items():
        found = by_scenario.get("memory")
        if found:
            rows.append(
                (
                    system,
                    f"{found['rss_mb_64_in_flight']:.0f} ({found['in_flight_then']} in flight)",
                    f"{found['rss_mb_with_waiting']:.0f} ({found['in_flight_with_waiting']})",
                    str(found["redis_bytes_per_waiting_job"]),
                )
            )
    table(rows)


def table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = zip(row, widths, strict=True)
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(cells)))


def verdicts(found: dict[str, Any]) -> list[str]:
    lines = []
    for scenario in SCENARIOS:
        run = found.get(scenario)
        if not run:
            continue
        small_p99 = max(run["tenants"][t]["wait_p99_s"] for t in SMALL)
        ok = (
            small_p99 <= 5
            and run["jain_index"] >= 0.99
            and run["rate_of_quota"] >= 0.99
            and run["throttled_ratio"] <= 0.005
            and run["calls_per_job"] <= 1.01
        )
        lines.append(
            f"dispatcher {scenario}: goal (B, C, D wait p99 <= 5 s, Jain >= 0.99, rate >= 0.99 Q, "
            f"<= 0.5 % throttled, <= 1.01 calls/job) {'MET' if ok else 'NOT MET'}"
        )
    idle = found.get("idle")
    if idle:
        ok = idle["p99_ms"] <= 25
        lines.append(
            f"dispatcher idle: goal (submit to start p99 <= 25 ms) {'MET' if ok else 'NOT MET'}"
        )
    memory = found.get("memory")
    if memory:
        ok = memory["rss_mb_64_in_flight"] <= 150 and memory["rss_mb_with_waiting"] <= 150
        lines.append(
            "dispatcher memory: goal (worker RSS <= 150 MB with 64 in flight and with 100,000 "
            f"waiting) {'MET' if ok else 'NOT MET'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quota-rpm", type=float, default=1200)
    parser.add_argument("--flood", type=int, default=6000)
    parser.add_argument("--duration-s", type=float, default=240)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--baseline", default=FIFO_BASELINE, help="git revision of the FIFO system")
    parser.add_argument("--systems", nargs="*", default=["fifo", "dispatcher"])
    parser.add_argument(
        "--scenarios",
        nargs="*",
        default=["idle", *SCENARIOS, "memory"],
        choices=["idle", *SCENARIOS, "memory"],
    )
    parser.add_argument("--out", default="out/bench-fair.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)

    trees = {"dispatcher": ROOT}
    if "fifo" in args.systems:
        trees["fifo"] = checkout(args.baseline)
    results: dict[str, Any] = {}
    try:
        for system in args.systems:
            results[system] = {}
            for scenario in args.scenarios:
                print(f"== {system} / {scenario}", flush=True)
                if scenario == "memory":
                    extra = ["--kind", "memory", "--waiting", str(args.waiting)]
                    memory = run_driver(trees[system], system, extra)
                    if memory is not None:
                        results[system][scenario] = memory
                    continue
                if scenario == "idle":
                    waits = run_driver(trees[system], system, ["--kind", "idle"])
                    if waits is None:
                        continue
                    ms = waits["queue_to_start_ms"]
                    results[system][scenario] = {
                        "jobs": len(ms),
                        "p50_ms": round(percentile(ms, 0.5), 2),
                        "p99_ms": round(percentile(ms, 0.99), 2),
                    }
                    print(f"   {json.dumps(results[system][scenario])}", flush=True)
                    continue
                extra = [
                    "--flood-priority",
                    SCENARIOS[scenario],
                    "--quota-rpm",
                    f"{args.quota_rpm:g}",
                    "--flood",
                    str(args.flood),
                    "--duration-s",
                    f"{args.duration_s:g}",
                ]
                raw = run_driver(trees[system], system, extra)
                if raw is None:
                    continue
                results[system][scenario] = summarise_flood(raw, args.quota_rpm, args.duration_s)
                print(f"   {json.dumps(results[system][scenario])}", flush=True)
    finally:
        if "fifo" in trees:
            remove_checkout(trees["fifo"])
    print(
        f"\nQ = {args.quota_rpm:g}/min, latency 500 +- 200 ms; A floods {args.flood} jobs at t = 0,"
        f" B, C, D one interactive job per second each for {args.duration_s:g} s; shares over "
        f"[{WINDOW_START_S:g} s, {args.duration_s:g} s]"
    )
    print_tables(results)
    lines = verdicts(results.get("dispatcher", {}))
    for line in lines:
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"settings": vars(args), "results": results, "verdicts": lines},
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"written to {out}")
    expected = len(args.scenarios) if "dispatcher" in args.systems else 0
    complete = len(results.get("dispatcher", {})) == expected == len(lines)
    return 0 if complete and all(line.endswith("MET") for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
