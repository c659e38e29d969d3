"""``imagegen submit | status | wait | cancel | jobs | batch``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagegen.contract import ASPECT_RATIOS, DEFAULT_EVENTS, EVENT_TYPES, OUTPUT_FORMATS
from imagegen.errors import FieldError, InvalidRequestError
from imagegen.messages import JOB_QUEUES
from imagegen.records import JobRecord, JobStatus
from imagegen.store.jobs import CancelOutcome
from imagegen.text import parse_json_object
from producer.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_JOB_UNSUCCESSFUL,
    EXIT_OK,
    EXIT_TIMEOUT,
    add_wait_options,
    duration_s,
    error,
    print_record,
    print_table,
)
from producer.client import DEFAULT_WAIT_S, Client

__all__ = ["register"]

_PROGRESS_WIDTH = 30
_POLL_S = 0.5


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser("submit", help="submit one job")
    submit.add_argument("prompt", help="what the image should show (1-10,000 characters)")
    submit.add_argument("--negative-prompt", help="what to keep out of the image")
    submit.add_argument("--aspect-ratio", choices=ASPECT_RATIOS, default="1:1")
    submit.add_argument("--output-format", choices=OUTPUT_FORMATS, default="png")
    submit.add_argument("--seed", type=int, default=0, help="0 = random (default)")
    submit.add_argument("--model-id", help="Bedrock model id (default: the configured one)")
    submit.add_argument("--job-id", help="your own job id; resubmitting it is a no-op")
    submit.add_argument("--priority", choices=JOB_QUEUES, default="interactive")
    submit.add_argument("--metadata", help="JSON object echoed back on the job")
    submit.add_argument("--webhook", metavar="URL", help="POST the job's events here")
    submit.add_argument(
        "--webhook-event",
        action="append",
        choices=EVENT_TYPES,
        metavar="EVENT",
        help=f"event to send (repeatable; default: {', '.join(DEFAULT_EVENTS)})",
    )
    submit.add_argument(
        "--idempotency-key", help="same key and request within 24 h: the original job"
    )
    submit.add_argument(
        "--expires-in",
        type=duration_s,
        metavar="DURATION",
        help="give up if not started within this (10m, 2h)",
    )
    submit.add_argument("--tenant", help="submit on behalf of this tenant")
    add_wait_options(submit, with_wait_flag=True)
    submit.set_defaults(handler=_submit)

    status = commands.add_parser("status", help="show a job's record")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the record as JSON")
    status.set_defaults(handler=_status)

    wait = commands.add_parser("wait", help="wait until a job is final")
    wait.add_argument("job_id")
    add_wait_options(wait, with_wait_flag=False)
    wait.set_defaults(handler=_wait)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=_cancel)

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--tenant", help="only this tenant's jobs")
    jobs.add_argument("--batch", help="only this batch's jobs")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(handler=_jobs)

    batch = commands.add_parser("batch", help="submit a JSON-lines file of jobs as one batch")
    batch.add_argument(
        "file",
        type=Path,
        help="one job per line: a prompt string, a request "
        'object ({"prompt": ...}) or a whole job ({"request": {...}, ...})',
    )
    batch.add_argument("--wait", action="store_true", help="follow it with a progress bar")
    batch.add_argument("--out", type=Path, help="save the images here (implies --wait)")
    batch.add_argument("--tenant", help="submit on behalf of this tenant")
    batch.add_argument("--timeout", type=float, default=24 * 3600.0)
    batch.set_defaults(handler=_batch)


def _submit(client: Client, args: argparse.Namespace) -> int:
    metadata = parse_json_object(args.metadata, "--metadata") if args.metadata else None
    request: dict[str, Any] = {
        "prompt": args.prompt,
        "aspect_ratio": args.aspect_ratio,
        "output_format": args.output_format,
        "seed": args.seed,
    }
    if args.negative_prompt:
        request["negative_prompt"] = args.negative_prompt
    expires_at = datetime.now(UTC) + timedelta(seconds=args.expires_in) if args.expires_in else None
    record = client.submit(
        request,
        job_id=args.job_id,
        model_id=args.model_id,
        metadata=metadata,
        priority=args.priority,
        webhook_url=args.webhook,
        webhook_events=args.webhook_event,
        expires_at=expires_at,
        tenant=args.tenant,
        idempotency_key=args.idempotency_key,
    )
    if args.wait or args.output:
        record = client.wait(record.job_id, args.timeout)
    return _report(client, record, args)


def _status(client: Client, args: argparse.Namespace) -> int:
    print_record(client.get(args.job_id), as_json=args.json)
    return EXIT_OK


def _wait(client: Client, args: argparse.Namespace) -> int:
    return _report(client, client.wait(args.job_id, args.timeout), args)


def _report(client: Client, record: JobRecord, args: argparse.Namespace) -> int:
    if args.output and record.status is JobStatus.SUCCEEDED:
        path = client.download(record, args.output)
        if not args.json:
            print(f"saved {path}", file=sys.stderr)
    print_record(record, as_json=args.json)
    if record.is_terminal and record.status is not JobStatus.SUCCEEDED:
        return EXIT_JOB_UNSUCCESSFUL
    return EXIT_OK


def _cancel(client: Client, args: argparse.Namespace) -> int:
    outcome = client.cancel(args.job_id)
    if outcome is CancelOutcome.TERMINAL:
        error(f"job {args.job_id} is already {client.get(args.job_id).status.value}")
        return EXIT_BAD_INPUT
    print(
        f"{args.job_id} {'canceled' if outcome is CancelOutcome.CANCELED else 'cancel requested'}"
    )
    return EXIT_OK


def _jobs(client: Client, args: argparse.Namespace) -> int:
    page = client.list_jobs(
        tenant=args.tenant,
        batch_id=args.batch,
        limit=args.limit,
        status=JobStatus(args.status) if args.status else None,
    )
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in page.jobs]))
        return EXIT_OK
    rows = [("job id", "status", "created", "prompt")]
    rows += [
        (
            r.job_id,
            r.status.value,
            r.created_at.isoformat(timespec="seconds"),
            r.request.prompt_text[:50] if r.request else "(refused)",
        )
        for r in page.jobs
    ]
    print_table(rows)
    return EXIT_OK


def _batch(client: Client, args: argparse.Namespace) -> int:
    specs = _read_jobs(args.file)
    batch_id, submitted = client.submit_batch(specs, tenant=args.tenant)
    print(f"batch {batch_id}: {len(submitted)} jobs queued", file=sys.stderr)
    if not (args.wait or args.out):
        print(batch_id)
        return EXIT_OK
    records = _follow(client, [r.job_id for r in submitted], args.timeout)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for record in records:
            if record.status is JobStatus.SUCCEEDED and record.s3_key:
                client.download(record, args.out / Path(record.s3_key).name)
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status.value] = counts.get(record.status.value, 0) + 1
    print_table([("status", "jobs"), *((status, str(n)) for status, n in sorted(counts.items()))])
    if len(records) < len(submitted) or any(not r.is_terminal for r in records):
        return EXIT_TIMEOUT
    unsuccessful = sum(n for status, n in counts.items() if status != "succeeded")
    return EXIT_JOB_UNSUCCESSFUL if unsuccessful else EXIT_OK


def _read_jobs(path: Path) -> list[dict[str, Any]]:
    specs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = line.strip()  # a bare prompt
        if isinstance(item, str):
            item = {"request": {"prompt": item}}
        elif isinstance(item, dict) and "request" not in item:
            item = {"request": item}
        if not isinstance(item, dict):
            raise InvalidRequestError(
                [FieldError(f"line {number}", "must be a JSON object or a prompt")]
            )
        specs.append(item)
    return specs


def _follow(client: Client, job_ids: list[str], timeout_s: float) -> list[JobRecord]:
    """Poll until every job is final, drawing a progress bar on stderr."""
    deadline = time.monotonic() + (timeout_s or DEFAULT_WAIT_S)
    interactive = sys.stderr.isatty()
    while True:
        records = [r for r in client.get_many(job_ids) if r is not None]
        done = sum(r.is_terminal for r in records)
        failed = sum(r.is_terminal and r.status is not JobStatus.SUCCEEDED for r in records)
        filled = _PROGRESS_WIDTH * done // max(len(job_ids), 1)
        bar = "#" * filled + "-" * (_PROGRESS_WIDTH - filled)
        line = f"[{bar}] {done}/{len(job_ids)} done, {failed} without an image"
        print(
            f"\r{line}" if interactive else line,
            end="" if interactive else "\n",
            file=sys.stderr,
            flush=True,
        )
        if done == len(job_ids) or time.monotonic() > deadline:
            if interactive:
                print(file=sys.stderr)
            return records
        time.sleep(_POLL_S if interactive else max(_POLL_S, 5.0))
