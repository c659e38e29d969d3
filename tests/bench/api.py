"""``POST /v1/jobs`` under concurrent clients: the API in one process (the baseline) against
the API in several (``IMAGEGEN_API_WORKERS``, default one per CPU), in the same run.

``make bench-api`` (or ``python -m tests.bench.api --seconds 10``). Both APIs serve the same
stack (a private Redis, no worker: only submitting is measured, and every job stays queued).
Each client holds one keep-alive connection and sends its next job when the last is answered;
each row is measured after a warm-up. Goal: at 16 clients, the processes' p99 <= 50 ms.

Beside latency and rate, each row gives what the kernel's scheduler counted for the API's
processes, per job: the CPU time they ran, and the time they were ready to run but waited for a
CPU (other work on the machine, the load generator and Redis included). On a shared machine
the second explains most of a bad p99.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx

from devstack.processes import interrupt_on_signal
from devstack.stack import Stack, StackOptions
from producer.client import Client
from tests.bench.cpu_time import SchedTimes, group_sched_times
from tests.bench.http_load import LoadResult, run_load

CLIENTS = (1, 16)
GOAL_CLIENTS = 16
GOAL_P99_MS = 50.0
UNCAPPED = {
    "IMAGEGEN_MAX_QUEUED_TOTAL": "100000000",
    "IMAGEGEN_MAX_QUEUED_PER_TENANT": "100000000",
}


def job_body(client: int, n: int) -> bytes:
    return (
        b'{"request": {"prompt": "benchmark picture %d-%d", "aspect_ratio": "16:9"}, '
        b'"metadata": {"client": %d}}' % (client, n, client)
    )


def wait_for_processes(url: str, processes: int, timeout_s: float = 60.0) -> None:
    """Until each of the API's processes has answered (``/healthz`` names the one that did):
    one still starting would take the CPU from those being measured."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < processes:
        if time.monotonic() > deadline:
            msg = f"{len(seen)} of {processes} API processes answered within {timeout_s:g} s"
            raise RuntimeError(msg)
        with httpx.Client(base_url=url, timeout=5) as http:  # a new connection each time
            seen.add(http.get("/healthz").json()["process"])


@dataclass(frozen=True)
class Row:
    api: str
    load: LoadResult
    sched: SchedTimes  # the API's processes, over the row (warm-up included)

    def per_job_ms(self, seconds: float) -> float:
        return seconds / self.load.answered * 1000


def measure(stack: Stack, name: str, key: str, clients: int, seconds: float) -> LoadResult:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return run_load(
        stack.urls[name],
        "/v1/jobs",
        headers=headers,
        body_of=job_body,
        clients=clients,
        seconds=seconds,
    )


def table(rows: list[Row]) -> list[str]:
    lines = [
        ("API", "clients", "p50 ms", "p99 ms", "jobs/s", "CPU ms/job", "CPU wait ms/job", "answers")
    ]
    for row in rows:
        result = row.load
        answers = ", ".join(f"{n} x {status}" for status, n in sorted(result.statuses.items()))
        lines.append(
            (
                row.api,
                str(result.clients),
                f"{result.p50:.1f}",
                f"{result.p99:.1f}",
                f"{result.rate:,.0f}",
                f"{row.per_job_ms(row.sched.ran_s):.2f}",
                f"{row.per_job_ms(row.sched.waited_s):.2f}",
                answers,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per row")
    parser.add_argument("--workers", type=int, help="the API's processes (default: the setting)")
    parser.add_argument("--out", default="out/bench-api.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)

    options = StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix="bench-api-")),
        force_private_redis=True,
        workers=(),
        extra_env=UNCAPPED,
    )
    rows: list[Row] = []
    with Stack(options) as stack:
        stack.start_api(workers=1, name="api-1")
        scaled = stack.start_api(workers=args.workers, name="api-n")
        processes = stack.api_workers["api-n"]
        wait_for_processes(scaled, processes)
        with Client(stack.settings()) as client:
            _, key = client.api_keys.create("bench")
        # Alternating, so a change in the machine's load meanwhile falls on both alike.
        for clients in CLIENTS:
            for name, api in (("1 process", "api-1"), (f"{processes} processes", "api-n")):
                group = stack.processes.pid(api)
                before = group_sched_times(group)
                result = measure(stack, api, key, clients, args.seconds)
                rows.append(Row(name, result, group_sched_times(group) - before))
                print(f"  {name}, {clients} clients: done", file=sys.stderr, flush=True)

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nPOST /v1/jobs, {args.seconds:g} s a row (no worker running); load average now {load}")
    for line in table(rows):
        print(line)
    baseline_at_goal, scaled_at_goal = rows[-2].load, rows[-1].load
    goals = {
        f"p99 at {GOAL_CLIENTS} clients, {processes} processes <= {GOAL_P99_MS:g} ms "
        f"({scaled_at_goal.p99:.1f} ms)": scaled_at_goal.p99 <= GOAL_P99_MS,
        f"jobs/s at {GOAL_CLIENTS} clients, {processes} processes above 1 process "
        f"({scaled_at_goal.rate:,.0f} against {baseline_at_goal.rate:,.0f})": (
            scaled_at_goal.rate > baseline_at_goal.rate
        ),
        "every job accepted (202)": all(set(row.load.statuses) == {202} for row in rows),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "seconds": args.seconds,
                "rows": [
                    {
                        "api": row.api,
                        "clients": row.load.clients,
                        "p50_ms": round(row.load.p50, 2),
                        "p99_ms": round(row.load.p99, 2),
                        "jobs_per_s": round(row.load.rate, 1),
                        "cpu_ms_per_job": round(row.per_job_ms(row.sched.ran_s), 3),
                        "cpu_wait_ms_per_job": round(row.per_job_ms(row.sched.waited_s), 3),
                        "statuses": dict(row.load.statuses),
                    }
                    for row in rows
                ],
                "goals": goals,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written to {out}")
    for goal, met in goals.items():
        print(f"{goal}: {'MET' if met else 'NOT MET'}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
