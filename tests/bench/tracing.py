"""What tracing costs: idle submit-to-start, and the API's answer to a submission, with tracing
off (no OTEL_* variables) and on (the API and the worker export every span over OTLP/HTTP to a
collector in this process), on the embedded stack (emulator without latency, one worker).

``make bench-tracing`` (or ``python -m tests.bench.tracing --jobs 300 --rounds 2``). Each round
starts a stack per mode, off then on, and submits one job every 100 ms through the HTTP API;
submit to start is the record's ``started_at - created_at``. Goal: on, the idle submit-to-start
p99 stays within 2 ms of off. Also timed in process: the submission's span with no SDK (what
every submission pays while tracing is off).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import fakeredis
import httpx2 as httpx

from devstack.stack import Stack, StackOptions
from imagegen.records import NewJob
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.submit_trace import traced_submission
from producer.client import Client
from tests.otlp import Collector

GOAL_MS = 2.0
WARM_UP_JOBS = 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q * len(ordered)) - 1)]


def run_mode(mode: str, jobs: int, collector: Collector) -> dict[str, list[float]]:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url} if mode == "on" else {}
    options = StackOptions(
        run_dir=Path(tempfile.mkdtemp(prefix=f"bench-tracing-{mode}-")),
        force_private_redis=True,
        worker_concurrency=8,
        quota_rpm=6000,
        quota_burst=100,
        extra_env={**env, "IMAGEGEN_API_WORKERS": "1"},
    )
    with Stack(options) as stack, Client(stack.settings()) as client:
        _, key = client.api_keys.create("bench")
        url = stack.start_api()
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            for i in range(WARM_UP_JOBS):
                job = http.post("/v1/jobs", json={"request": {"prompt": f"warm-up {i}"}}).json()
                client.wait(job["job_id"], timeout_s=30)
            ids, answers = [], []
            for i in range(jobs):
                started = time.perf_counter()
                response = http.post("/v1/jobs", json={"request": {"prompt": f"idle {i}"}})
                answers.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 202, response.text
                ids.append(response.json()["job_id"])
                time.sleep(0.1)
            records = [client.wait(job_id, timeout_s=30) for job_id in ids]
    waits = [(r.started_at - r.created_at).total_seconds() * 1000 for r in records if r.started_at]
    return {"submit_to_start_ms": waits, "api_answer_ms": answers}


def span_off_us(rounds: int = 20_000) -> float:
    """The submission's span with no SDK: microseconds per submission (no Redis is touched)."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    redis = fakeredis.FakeRedis(decode_responses=True)
    spec = Client(settings, redis_client=redis).spec("a lighthouse")
    jobs = [NewJob(job_id="01M96XF9YFPHN9D0XZ3XP6J9ZW", model_id="m", spec=spec, created_ms=0)]
    dispatch = Dispatch(redis, settings)

    def once() -> None:
        with traced_submission(jobs, dispatch) as submission:
            submission.stored([])

    return timeit.timeit(once, number=rounds) / rounds * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300, help="jobs per mode and round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    collector = Collector()
    results: dict[str, dict[str, list[float]]] = {
        mode: {"submit_to_start_ms": [], "api_answer_ms": []} for mode in ("off", "on")
    }
    try:
        for round_number in range(1, args.rounds + 1):
            for mode in ("off", "on"):
                print(f"round {round_number}, tracing {mode}: {args.jobs} jobs", flush=True)
                found = run_mode(mode, args.jobs, collector)
                for name, values in found.items():
                    results[mode][name] += values
    finally:
        collector.stop()
    print()
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'jobs':>8}")
    for name in ("submit_to_start_ms", "api_answer_ms"):
        for mode in ("off", "on"):
            values = results[mode][name]
            label = f"{name.removesuffix('_ms').replace('_', ' ')}, {mode}"
            print(
                f"{label:28}{statistics.median(values):>10.2f}"
                f"{percentile(values, 0.99):>10.2f}{len(values):>8}"
            )
    print(f"\nspans exported while on: {len(collector.spans)}")
    print(f"the submission's span with no SDK: {span_off_us():.1f} µs per submission")
    off = percentile(results["off"]["submit_to_start_ms"], 0.99)
    on = percentile(results["on"]["submit_to_start_ms"], 0.99)
    met = on - off <= GOAL_MS
    print(
        f"\ngoal (idle submit-to-start p99, on within {GOAL_MS:g} ms of off): "
        f"{on - off:+.2f} ms, {'MET' if met else 'NOT MET'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
