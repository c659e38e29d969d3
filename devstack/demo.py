"""``make demo``: run the model documentation's examples end to end on the embedded stack."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.receiver import Receiver
from devstack.stack import Stack, StackOptions
from imagegen.contract import JobSpec
from imagegen.records import JobRecord, JobStatus
from imagegen.redis.keys import NO_TENANT
from producer.client import Client
from producer.tables import format_table
from producer.webhooks import WebhookVerificationError, verify

__all__ = ["DEMO_JOBS", "run_demo"]

DEMO_TIMEOUT_S = 120.0
WEBHOOK_WAIT_S = 15.0
WEBHOOK_PATH = "/webhooks"
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

# A chain: a Core picture, its background removed, then upscaled 4x (Remove Background takes
# at most 4.2 MP, so it comes before the upscale). Each step takes the previous one's output.
CHAIN_LABELS = ("chain: core", "chain: cutout", "chain: upscale")
DEMO_CHAIN: tuple[dict[str, Any], ...] = (
    {
        "model_id": "stability.stable-image-core-v1:0",
        "request": {"prompt": "A red apple on a plain white table", "aspect_ratio": "1:1"},
    },
    {
        "model_id": "us.stability.stable-image-remove-background-v1:0",
        "request": {"image": {"step": 0}, "output_format": "png"},
    },
    {
        "model_id": "us.stability.stable-fast-upscale-v1:0",
        "request": {"image": {"step": 1}, "output_format": "png"},
    },
)


def run_demo(out_dir: Path = Path("out")) -> int:
    """Start the stack, run the demo jobs, save images and records, stop. 0 when all went
    as expected."""
    started = time.monotonic()
    print("Starting the local stack (Redis, Bedrock emulator, S3, worker)...", flush=True)
    receiver = Receiver()
    options = StackOptions(
        extra_env={
            "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
            "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        }
    )
    try:
        with Stack(options) as stack:
            print(
                f"  up in {time.monotonic() - started:.1f} s: "
                + ", ".join(f"{name} {url}" for name, url in stack.urls.items())
                + f", webhook receiver {receiver.url(WEBHOOK_PATH)}",
                flush=True,
            )
            with Client(stack.settings()) as client:
                # The local S3 starts empty each time: images an earlier run cached are gone.
                client.cache.purge(NO_TENANT)
                webhook_url = receiver.url(WEBHOOK_PATH)
                chain_id, chain_steps = client.submit_chain(
                    [
                        {**step, "metadata": {"demo": label}, "webhook_url": webhook_url}
                        for step, label in zip(DEMO_CHAIN, CHAIN_LABELS, strict=True)
                    ]
                )
                print(f"Submitted chain {chain_id} ({len(chain_steps)} steps).", flush=True)
                jobs = [
                    (
                        job.label,
                        client.spec(
                            job.request, metadata={"demo": job.label}, webhook_url=webhook_url
                        ),
                    )
                    for job in DEMO_JOBS
                ]
                records = _run_jobs(
                    client,
                    jobs,
                    {r.job_id: label for r, label in zip(chain_steps, CHAIN_LABELS, strict=True)},
                    started,
                )
                _save(client, records, out_dir)
                chain = client.chain(chain_id)
                # One event per job, plus the chain's own at its end.
                events = _collect_webhooks(client, receiver, len(records) + 1)
    finally:
        receiver.stop()
    labels = [job.label for job in DEMO_JOBS] + list(CHAIN_LABELS)
    _print_table(labels, records)
    print(
        f"\nChain {chain.chain_id}: {chain.status}, ${chain.cost_usd:.2f}, "
        f"output {chain.output_s3_uri or chain.reason}"
    )
    _print_webhooks(events, dict(zip((r.job_id for r in records), labels, strict=True)))
    (out_dir / "webhooks.json").write_text(json.dumps(events, indent=2) + "\n")
    expected = [job.expected for job in DEMO_JOBS] + [JobStatus.SUCCEEDED] * len(CHAIN_LABELS)
    failures = [
        f"{label}: {record.status.value} (expected {status.value})"
        for label, status, record in zip(labels, expected, records, strict=True)
        if record.status is not status
    ]
    if chain.status != "succeeded":
        failures.append(f"chain: {chain.status} ({chain.reason})")
    if len(events) != len(records) + 1 or not all(e["verified"] for e in events):
        failures.append(
            f"webhooks: {len(events)} received for {len(records)} jobs, "
            f"{sum(e['verified'] for e in events)} verified"
        )
    print(
        f"\nImages in {out_dir}/, records in {out_dir}/results.json, webhooks in "
        f"{out_dir}/webhooks.json. Everything stopped after {time.monotonic() - started:.1f} s."
    )
    for failure in failures:
        print(f"UNEXPECTED {failure}")
    return 1 if failures else 0


def _run_jobs(
    client: Client,
    jobs: list[tuple[str, JobSpec]],
    chain_labels: dict[str, str],
    started: float,
) -> list[JobRecord]:
    """Submit the jobs and follow them and the chain's steps until all are final (in order:
    the jobs, then the steps)."""
    submitted = client.submit_many([spec for _, spec in jobs])
    print(f"Submitted {len(submitted)} jobs.", flush=True)
    labels = {
        record.job_id: label for record, (label, _) in zip(submitted, jobs, strict=True)
    } | chain_labels
    last: dict[str, JobStatus] = {}
    deadline = time.monotonic() + DEMO_TIMEOUT_S
    while True:
        current = [r for r in client.get_many(list(labels)) if r is not None]
        for record in current:
            if last.get(record.job_id) is not record.status:
                last[record.job_id] = record.status
                print(
                    f"  [{time.monotonic() - started:5.1f} s] {labels[record.job_id]:<15} "
                    f"{record.job_id}  {record.status.value}",
                    flush=True,
                )
        if len(current) == len(labels) and all(r.is_terminal for r in current):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(_POLL_S)
    order = list(labels)
    return sorted(current, key=lambda record: order.index(record.job_id))


def _save(client: Client, records: list[JobRecord], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for record in records:
        if record.status is JobStatus.SUCCEEDED and record.s3_key:
            extension = record.s3_key.rsplit(".", 1)[-1]
            client.download(record, out_dir / f"{record.job_id}.{extension}")
    results = [record.model_dump(mode="json") for record in records]
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def _collect_webhooks(client: Client, receiver: Receiver, expected: int) -> list[dict[str, Any]]:
    """The events the receiver got, each checked with ``producer.webhooks.verify``."""
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    while len(receiver.received(WEBHOOK_PATH)) < expected and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    secrets = client.signing_secrets.active()
    events = []
    for request in receiver.received(WEBHOOK_PATH):
        try:
            event = verify(request["headers"], request["body"], secrets)
            verified = True
        except WebhookVerificationError:
            event, verified = json.loads(request["body"]), False
        headers = {k.lower(): v for k, v in request["headers"].items()}
        events.append(
            {"webhook_id": headers.get("webhook-id"), "verified": verified, "event": event}
        )
    return events


def _print_webhooks(events: list[dict[str, Any]], labels: dict[str, str]) -> None:
    print("\nWebhooks the local receiver got (Standard Webhooks signatures checked):")
    rows = [("example", "type", "webhook-id", "signature")]
    for item in events:
        data = item["event"]["data"]
        job_id = data["job_id"]
        rows.append(
            (
                labels.get(job_id, "?"),
                item["event"]["type"],
                str(item["webhook_id"]),
                "verified" if item["verified"] else "BAD",
            )
        )
    print(format_table(rows))


def _print_table(labels: list[str], records: list[JobRecord]) -> None:
    rows = [("example", "job id", "status", "seed", "size", "S3 key / reason")]
    for label, record in zip(labels, records, strict=False):
        size = f"{record.width}x{record.height}" if record.width else "-"
        where = record.s3_key or record.finish_reason or record.error_code or "-"
        rows.append(
            (label, record.job_id, record.status.value, str(record.seed or "-"), size, where)
        )
    print()
    print(format_table(rows))
