"""What operators see: /metrics (fleet and worker), JSON logs without prompts, health probes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack.processes import free_port
from devstack.stack import Stack
from producer.client import Client

pytestmark = pytest.mark.integration

MARKED_PROMPT = "an operator must never read this prompt 41c7"


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_the_api_serves_fleet_metrics_from_redis(stack: Stack) -> None:
    api = stack.urls.get("api") or stack.start_api()
    with Client(stack.settings()) as client:
        job = client.submit("a metrics check")
        client.wait(job.job_id, timeout_s=30)
    metrics = scrape(api + "/metrics")
    model = (("model", "stability.stable-image-core-v1:0"),)
    assert metrics["imagegen_jobs_total"][(*model, ("status", "succeeded"))] >= 1
    images = metrics["imagegen_images_generated_total"][model]
    assert images >= 1
    assert metrics["imagegen_estimated_spend_usd_total"][model] == pytest.approx(images * 0.04)
    assert metrics["imagegen_rate_limit_configured_rpm"][model] == 6000
    assert metrics["imagegen_rate_limit_effective_rpm"][model] == 6000
    assert (("queue", "interactive"),) in metrics["imagegen_queue_depth"]
    assert (("queue", "batch"),) in metrics["imagegen_queue_oldest_age_seconds"]
    for gauge in ("imagegen_jobs_open", "imagegen_dlq_jobs", "imagegen_webhook_outbox_pending"):
        assert () in metrics[gauge]


def test_a_worker_serves_its_own_metrics(stack: Stack) -> None:
    port = free_port()
    stack.start_worker(
        "metered", "interactive", extra_env={"IMAGEGEN_WORKER_METRICS_PORT": str(port)}
    )
    try:
        with Client(stack.settings()) as client:
            for _ in range(6):
                client.wait(client.submit("a metered job").job_id, timeout_s=30)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        stack.processes.stop("metered")
    assert "imagegen_worker_bedrock_latency_seconds_count" in metrics
    assert "imagegen_worker_queue_wait_seconds_count" in metrics
    assert "imagegen_worker_jobs_total" in metrics


def test_logs_are_json_lines_with_job_facts_and_no_prompt(stack: Stack) -> None:
    with Client(stack.settings()) as client:
        job = client.submit(MARKED_PROMPT)
        client.wait(job.job_id, timeout_s=30)
    deadline = time.monotonic() + 10
    while True:  # the worker logs "job succeeded" just after the record says so
        log_text = Path(stack.processes.log_dir / "worker.log").read_text()
        lines = [
            json.loads(line)
            for line in log_text.splitlines()
            if line.startswith("{") and job.job_id in line
        ]
        events = {line["msg"]: line for line in lines if line.get("job_id") == job.job_id}
        if "job succeeded" in events or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert MARKED_PROMPT not in log_text
    assert {"job running", "job succeeded"} <= set(events)
    running = events["job running"]
    assert running["attempt"] == 1
    assert running["queue"] == "interactive"
    assert running["prompt_chars"] == len(MARKED_PROMPT)
    assert len(running["prompt_sha256"]) == 16
    assert events["job succeeded"]["elapsed_ms"] >= 0


def test_health_worker_answers_for_a_live_worker_and_fails_for_none(stack: Stack) -> None:
    alive = subprocess.run(
        [sys.executable, "-m", "producer.cli", "health", "worker"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert alive.returncode == 0, alive.stderr
    assert "worker@" in alive.stdout
    nobody = subprocess.run(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "health",
            "worker",
            "--destination",
            "nobody@nowhere",
            "--timeout",
            "1",
        ],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert nobody.returncode == 5
    assert "no worker answered" in nobody.stderr
