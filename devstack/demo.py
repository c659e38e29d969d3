"""``make demo``: run the model documentation's examples end to end on the embedded stack."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.stack import Stack, StackOptions
from producer.client import Client
from producer.jobs import JobRecord, JobStatus

__all__ = ["DEMO_JOBS", "run_demo"]

DEMO_TIMEOUT_S = 120.0
_POLL_S = 0.2


@dataclass(frozen=True)
class DemoJob:
    label: str
    request: dict[str, Any]
    expected: JobStatus = JobStatus.SUCCEEDED


# The examples of the Stable Image Core documentation, the older SDXL request form, a fixed
# seed, and a prompt the emulator's content filter refuses.
DEMO_JOBS = (
    DemoJob(
        "workspace",
        {
            "prompt": "A modern minimalist workspace with natural lighting and plants",
            "aspect_ratio": "16:9",
            "output_format": "png",
        },
    ),
    DemoJob(
        "coffee-shop",
        {
            "prompt": "Cozy coffee shop interior with warm lighting",
            "negative_prompt": "cluttered, dark, empty",
            "aspect_ratio": "3:2",
            "output_format": "jpeg",
        },
    ),
    DemoJob(
        "fixed-seed",
        {
            "prompt": "A lighthouse on a rocky coast at sunset",
            "seed": 42,
            "aspect_ratio": "2:3",
            "output_format": "webp",
        },
    ),
    DemoJob(
        "sdxl-form",
        {
            "text_prompts": [
                {"text": "Snowy mountain village at night", "weight": 1.0},
                {"text": "people", "weight": -1.0},
            ],
            "aspect_ratio": "21:9",
        },
    ),
    DemoJob("filtered", {"prompt": "A forbidden scene"}, expected=JobStatus.FILTERED),
)


def run_demo(out_dir: Path = Path("out"), options: StackOptions | None = None) -> int:
    """Start the stack, run the demo jobs, save images and records, stop. 0 when all went
    as expected."""
    started = time.monotonic()
    print("Starting the local stack (Redis, Bedrock emulator, S3, worker)...", flush=True)
    with Stack(options) as stack:
        print(
            f"  up in {time.monotonic() - started:.1f} s: "
            + ", ".join(f"{name} {url}" for name, url in stack.urls.items()),
            flush=True,
        )
        with Client(stack.settings()) as client:
            records = _run_jobs(client, started)
            _save(client, records, out_dir)
    _print_table([job.label for job in DEMO_JOBS], records)
    failures = [
        f"{job.label}: {record.status.value} (expected {job.expected.value})"
        for job, record in zip(DEMO_JOBS, records, strict=True)
        if record.status is not job.expected
    ]
    print(
        f"\nImages in {out_dir}/, records in {out_dir}/results.json. "
        f"Everything stopped after {time.monotonic() - started:.1f} s."
    )
    for failure in failures:
        print(f"UNEXPECTED {failure}")
    return 1 if failures else 0


def _run_jobs(client: Client, started: float) -> list[JobRecord]:
    specs = [client.spec(job.request, metadata={"demo": job.label}) for job in DEMO_JOBS]
    submitted = client.submit_many(specs)
    print(f"Submitted {len(submitted)} jobs.", flush=True)
    labels = {record.job_id: job.label for record, job in zip(submitted, DEMO_JOBS, strict=True)}
    last: dict[str, JobStatus] = {}
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    while True:
        current = [r for r in client.get_many(list(labels)) if r is not None]
        for record in current:
            if last.get(record.job_id) is not record.status:
                last[record.job_id] = record.status
                print(
                    f"  [{time.monotonic() - started:5.1f} s] {labels[record.job_id]:<12} "
                    f"{record.job_id}  {record.status.value}",
                    flush=True,
                )
        if len(current) == len(labels) and all(r.is_terminal for r in current):
            return current
        if time.monotonic() > deadline:
            return current
        time.sleep(_POLL_S)


def _save(client: Client, records: list[JobRecord], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        if record.status is JobStatus.SUCCEEDED and record.s3_key:
            extension = record.s3_key.rsplit(".", 1)[-1]
            client.download(record, out_dir / f"{record.job_id}.{extension}")
    results = [record.model_dump(mode="json") for record in records]
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def _print_table(labels: list[str], records: list[JobRecord]) -> None:
    rows = [("example", "job id", "status", "seed", "size", "S3 key / reason")]
    for label, record in zip(labels, records, strict=False):
        size = f"{record.width}x{record.height}" if record.width else "-"
        where = record.s3_key or record.finish_reason or record.error_code or "-"
        rows.append(
            (label, record.job_id, record.status.value, str(record.seed or "-"), size, where)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for index, row in enumerate(rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
        if index == 0:
            print("  ".join("-" * width for width in widths))
