"""``imagegen status | wait | cancel | jobs | batch``: following and listing work, through Redis or
the HTTP API (``--api``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imagegen.errors import FieldError, InvalidRequestError
from imagegen.records import JobStatus
from producer.cli.backends import ChainView, Jobs, JobView
from producer.cli.common import (
    EXIT_JOB_UNSUCCESSFUL,
    EXIT_OK,
    EXIT_TIMEOUT,
    add_api_option,
    add_wait_options,
    print_record,
    print_table,
)
from producer.cli.progress import (
    OPEN_STATUSES,
    ProgressBar,
    follow_batch,
    follow_chain,
    follow_job,
)

__all__ = ["register", "report_batch", "report_chain", "report_job"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="show a job, a batch or a chain as it is now")
    status.add_argument("job_id", metavar="ID", help="a job, batch or chain id")
    status.add_argument("--json", action="store_true", help="print the record as JSON")
    add_api_option(status)
    status.set_defaults(jobs_handler=_status)

    wait = commands.add_parser(
        "wait", help="follow a job, a batch or a chain with a progress bar until it is final"
    )
    wait.add_argument("job_id", metavar="ID", help="a job, batch or chain id")
    add_wait_options(
        wait,
        with_wait_flag=False,
        what="the job or chain",
        output="save the image here (a chain's final one; a batch's into this folder)",
    )
    add_api_option(wait)
    wait.set_defaults(jobs_handler=_wait)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    add_api_option(cancel)
    cancel.set_defaults(jobs_handler=_cancel)

    jobs = commands.add_parser("jobs", help="list jobs, newest first")
    jobs.add_argument("--status", choices=[s.value for s in JobStatus])
    jobs.add_argument("--tenant", help="only this tenant's jobs")
    jobs.add_argument("--batch", help="only this batch's jobs")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true")
    add_api_option(jobs)
    jobs.set_defaults(jobs_handler=_jobs)

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
    add_api_option(batch)
    batch.set_defaults(jobs_handler=_batch)


def _status(jobs: Jobs, args: argparse.Namespace) -> int:
    kind = jobs.kind_of(args.job_id)
    if kind == "chain":
        print_chain(jobs.chain(args.job_id), as_json=args.json)
    elif kind == "batch":
        counts = jobs.batch_counts(args.job_id)
        if args.json:
            print(json.dumps({"batch_id": args.job_id, "counts": counts}))
        else:
            print_counts(counts)
    else:
        print_record(jobs.get(args.job_id), as_json=args.json)
    return EXIT_OK


def _wait(jobs: Jobs, args: argparse.Namespace) -> int:
    kind = jobs.kind_of(args.job_id)
    if kind == "chain":
        chain = follow_chain(jobs, args.job_id, args.timeout, ProgressBar(0))
        return report_chain(jobs, chain, args)
    if kind == "batch":
        size = sum(jobs.batch_counts(args.job_id).values())
        return report_batch(jobs, args.job_id, size, args.timeout, args.output)
    job = follow_job(jobs, args.job_id, args.timeout, ProgressBar(1))
    return report_job(jobs, job, args)


def report_job(jobs: Jobs, job: JobView, args: argparse.Namespace) -> int:
    """Save the image where asked, print the record; 1 when the job ended without an image."""
    if args.output and job.status == JobStatus.SUCCEEDED:
        path = jobs.download(job, Path(args.output))
        if not args.json:
            print(f"saved {path}", file=sys.stderr)
    print_record(job, as_json=args.json)
    if job.is_terminal and job.status != JobStatus.SUCCEEDED:
        return EXIT_JOB_UNSUCCESSFUL
    return EXIT_OK


def report_chain(jobs: Jobs, chain: ChainView, args: argparse.Namespace) -> int:
    """Save the final image where asked and print the chain, a line per step."""
    if args.output and chain.status == "succeeded":
        path = jobs.download_chain(chain, Path(args.output))
        if not args.json:
            print(f"saved {path}", file=sys.stderr)
    print_chain(chain, as_json=args.json)
    return EXIT_OK if chain.status == "succeeded" else EXIT_JOB_UNSUCCESSFUL


def print_chain(chain: ChainView, *, as_json: bool) -> None:
    if as_json:
        print(chain.model_dump_json())
        return
    rows = [("step", "job id", "model", "status")]
    rows += [
        (str(index), step.job_id, step.model_id, str(step.status))
        for index, step in enumerate(chain.steps)
    ]
    print_table(rows)
    summary = f"chain {chain.chain_id} {chain.status}  cost=${chain.cost_usd:.2f}"
    print(summary + (f"  reason={chain.reason!r}" if chain.reason else ""))


def print_counts(counts: dict[str, int]) -> None:
    print_table([("status", "jobs"), *((status, str(n)) for status, n in sorted(counts.items()))])


def _cancel(jobs: Jobs, args: argparse.Namespace) -> int:
    print(f"{args.job_id} {jobs.cancel(args.job_id)}")
    return EXIT_OK


def _prompt(job: JobView) -> str:
    request = job.request
    if request is None:
        return "(refused)"
    if isinstance(request, dict):
        return str(request.get("prompt") or "")
    return str(request.prompt_text)


def _jobs(jobs: Jobs, args: argparse.Namespace) -> int:
    found = jobs.list(tenant=args.tenant, status=args.status, batch_id=args.batch, limit=args.limit)
    if args.json:
        print("[" + ",".join(job.model_dump_json() for job in found) + "]")
        return EXIT_OK
    rows = [("job id", "status", "created", "prompt")]
    rows += [
        (
            job.job_id,
            str(job.status),
            job.created_at.isoformat(timespec="seconds"),
            _prompt(job)[:50],
        )
        for job in found
    ]
    print_table(rows)
    return EXIT_OK


def _batch(jobs: Jobs, args: argparse.Namespace) -> int:
    specs = _read_jobs(args.file)
    batch_id, job_ids = jobs.submit_batch(specs, tenant=args.tenant)
    print(f"batch {batch_id}: {len(job_ids)} jobs queued", file=sys.stderr)
    if not (args.wait or args.out):
        print(batch_id)
        return EXIT_OK
    return report_batch(jobs, batch_id, len(job_ids), args.timeout, args.out)


def report_batch(
    jobs: Jobs, batch_id: str, size: int, timeout_s: float, out: Path | str | None
) -> int:
    """Follow a batch to its end, save its images into ``out`` and print its counts."""
    counts = follow_batch(jobs, batch_id, timeout_s, ProgressBar(size))
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        for job in jobs.batch_jobs(batch_id):
            if job.status == JobStatus.SUCCEEDED and job.s3_key:
                jobs.download(job, folder / Path(job.s3_key).name)
    print_counts(counts)
    if any(counts.get(status) for status in OPEN_STATUSES):
        return EXIT_TIMEOUT
    unsuccessful = sum(n for status, n in counts.items() if status != JobStatus.SUCCEEDED)
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
