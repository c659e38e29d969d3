"""A worker's memory with 64 Bedrock calls in flight, against a plain Celery worker's.

``make bench-worker-memory`` (or ``python -m tests.bench.worker_memory --latency-ms 4000``).
The embedded stack (a private ``redis-server``, moto's S3, the Bedrock emulator answering each
call after ``--latency-ms``) runs one worker the way ``make demo`` does, with the threads pool at
``--concurrency`` (64). Jobs are submitted to keep every thread in a call for ``--hold-s``
seconds; the worker process's resident memory (with any children's) is sampled every 0.2 s
with the emulator's count of calls in flight. Figures: the worker idle (started, before any job;
and again after the load, once its jobs are done), its peak and its median while at least 90 %
of ``--concurrency`` calls were in flight; and, in the same run, a plain Celery worker
(``tests/bench/noop_app.py``) with the same threads doing a task that sleeps as long.
Goal: the worker's peak with 64 calls in flight <= 150 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from devstack.processes import ProcessGroup, python_module
from devstack.stack import Stack, StackOptions
from imagegen.health import worker_answers
from producer.client import Client
from tests.bench.noop_app import CONCURRENCY_ENV, EVENTS_ENV, SLEEP_TASK, URL_ENV, make_app

GOAL_MB = 150.0
SAMPLE_S = 0.2
SUBMIT_CHUNK = 100
REPO = Path(__file__).resolve().parents[2]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process under it, in MB."""
    total_kb = 0
    for each in [pid, *_descendants(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


@dataclass
class Samples:
    """RSS samples taken with the number of calls in flight at the time."""

    rss: list[tuple[float, int]] = field(default_factory=list)

    def loaded(self, at_least: int) -> list[float]:
        return [mb for mb, flying in self.rss if flying >= at_least]

    def peak(self) -> float:
        return max((mb for mb, _ in self.rss), default=0.0)


class Sampler:
    """Samples ``rss_mb(pid)`` and ``in_flight()`` every ``SAMPLE_S`` in a thread."""

    def __init__(self, pid: int, in_flight: Callable[[], int]) -> None:
        self.pid, self.in_flight = pid, in_flight
        self.samples = Samples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.samples.rss.append((rss_mb(self.pid), self.in_flight()))


def settle_rss(pid: int, seconds: float = 3.0) -> float:
    """The median of ``seconds`` of samples (a process at rest)."""
    values = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values.append(rss_mb(pid))
        time.sleep(SAMPLE_S)
    return statistics.median(values)


def measure_plain(
    redis_url: str, concurrency: int, latency_s: float, hold_s: float, run_dir: Path
) -> dict[str, float]:
    """A plain Celery worker, ``concurrency`` threads, each task sleeping ``latency_s``."""
    processes = ProcessGroup(run_dir / "logs")
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), path]) if path else str(REPO),
        URL_ENV: redis_url,
        EVENTS_ENV: "1",
        CONCURRENCY_ENV: str(concurrency),
    }
    argv = python_module(
        "celery", "-A", "tests.bench.noop_app", "worker", "--pool", "threads",
        "--concurrency", str(concurrency), "--loglevel", "INFO",
        "--hostname", "plain@%h", "--without-mingle", "--without-gossip", "--events",
    )  # fmt: skip
    app = make_app(redis_url, events=True, concurrency=concurrency)
    try:
        worker = processes.spawn(
            "plain", argv, env=env, ready=lambda: worker_answers(redis_url, "plain"), timeout_s=60
        )
        idle = settle_rss(worker.pid)
        count = int(concurrency * (hold_s / latency_s + 1))
        task = app.tasks[SLEEP_TASK]
        started = time.monotonic()
        results = [task.apply_async((latency_s,)) for _ in range(count)]

        def in_flight() -> int:
            # Every thread sleeps from the first tasks' start until the backlog's last round.
            elapsed = time.monotonic() - started
            busy = latency_s / 2 < elapsed < (count / concurrency - 1) * latency_s
            return concurrency if busy else 0

        with Sampler(worker.pid, in_flight) as sampler:
            for result in results:
                result.get(timeout=hold_s + 60)
        loaded = sampler.samples.loaded(concurrency)
        return {
            "idle": idle,
            "peak": sampler.samples.peak(),
            "median": statistics.median(loaded) if loaded else 0.0,
        }
    finally:
        app.close()
        processes.stop_all()


def measure_ours(
    stack: Stack, concurrency: int, hold_s: float, latency_s: float
) -> dict[str, float]:
    pid = stack.processes.pid("worker")
    stats_url = stack.urls["bedrock"] + "/_emulator/stats"
    with httpx.Client(timeout=5) as http, Client(stack.settings()) as client:

        def in_flight() -> int:
            return int(http.get(stats_url).json()["in_flight"])

        idle = settle_rss(pid)
        count = int(concurrency * (hold_s / latency_s + 1))
        ids: list[str] = []
        with Sampler(pid, in_flight) as sampler:
            for start in range(0, count, SUBMIT_CHUNK):
                chunk = [
                    {"request": {"prompt": f"memory job {n}: a lighthouse in a storm"}}
                    for n in range(start, min(start + SUBMIT_CHUNK, count))
                ]
                ids += [record.job_id for record in client.submit_many(chunk)]
            records = [client.wait(job_id, timeout_s=hold_s + 120) for job_id in ids]
        after = settle_rss(pid)
        stats = http.get(stats_url).json()
    failed = [r.job_id for r in records if r.status.value != "succeeded"]
    if failed:
        print(f"{len(failed)} jobs did not succeed, e.g. {failed[0]}", file=sys.stderr)
    loaded = sampler.samples.loaded(int(concurrency * 0.9))
    return {
        "idle": idle,
        "after": after,
        "peak": sampler.samples.peak(),
        "median": statistics.median(loaded) if loaded else 0.0,
        "loaded_samples": len(loaded),
        "max_in_flight": float(stats["max_in_flight"]),
        "jobs": float(len(records)),
        "failed": float(len(failed)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=4000.0)
    parser.add_argument("--hold-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    latency_s = args.latency_ms / 1000
    options = StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix="bench-worker-memory-")),
        force_private_redis=True,
        worker_concurrency=args.concurrency,
        quota_rpm=60_000,
        quota_burst=1_000,
        emulator_args=["--latency-ms", f"{args.latency_ms:g}"],
        workers=(("worker", "interactive,batch,webhooks"),),
    )
    with Stack(options) as stack:
        print(f"stack up ({options.run_dir}); a plain Celery worker first", flush=True)
        plain_url = stack.urls["redis"].rsplit("/", 1)[0] + "/9"
        plain = measure_plain(plain_url, args.concurrency, latency_s, args.hold_s, options.run_dir)
        print("the service's worker", flush=True)
        ours = measure_ours(stack, args.concurrency, args.hold_s, latency_s)
    print()
    print(f"{'worker':<34} {'idle MB':>8} {'peak MB':>8} {'median MB':>10}")
    print(
        f"{'plain Celery, sleep task':<34} {plain['idle']:>8.1f} {plain['peak']:>8.1f}"
        f" {plain['median']:>10.1f}"
    )
    print(
        f"{'imagegen, Bedrock calls':<34} {ours['idle']:>8.1f} {ours['peak']:>8.1f}"
        f" {ours['median']:>10.1f}"
    )
    print(
        f"imagegen: {ours['jobs']:.0f} jobs ({ours['failed']:.0f} not succeeded), at most"
        f" {ours['max_in_flight']:.0f} calls in flight at the emulator,"
        f" {ours['loaded_samples']} samples with >= {int(args.concurrency * 0.9)} in flight;"
        f" idle again after the load: {ours['after']:.1f} MB"
    )
    print(
        f"above the plain worker: idle {ours['idle'] - plain['idle']:+.1f} MB,"
        f" loaded (median) {ours['median'] - plain['median']:+.1f} MB"
    )
    enough = ours["max_in_flight"] >= args.concurrency and ours["loaded_samples"] > 0
    met = enough and ours["peak"] <= GOAL_MB
    print(
        f"worker RSS with {args.concurrency} calls in flight <= {GOAL_MB:g} MB"
        f" (peak {ours['peak']:.1f} MB): {'MET' if met else 'NOT MET'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
