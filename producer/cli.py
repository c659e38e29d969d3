"""``imagegen``: submit and follow jobs from a shell, and start a worker.

Exit status: 0 success; 1 the job ended without an image (failed, filtered, canceled);
2 bad input; 3 timed out waiting; 4 no such job; 5 Redis or S3 unreachable.
Errors go to stderr; ``--json`` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import redis
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from producer.client import DEFAULT_WAIT_S, Client
from producer.contract import ASPECT_RATIOS, OUTPUT_FORMATS, validation_errors
from producer.errors import (
    ImagegenError,
    InvalidRequestError,
    JobConflictError,
    JobNotFoundError,
    JobTimeoutError,
)
from producer.jobs import JobRecord, JobStatus
from producer.messages import JOB_QUEUES, QUEUES
from producer.settings import Settings, get_settings
from producer.tables import format_table
from producer.webhooks import DEFAULT_EVENTS, EVENT_TYPES

__all__ = ["main"]

EXIT_OK = 0
EXIT_JOB_UNSUCCESSFUL = 1
EXIT_BAD_INPUT = 2
EXIT_TIMEOUT = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegen",
        description="Stable Image Core jobs on AWS Bedrock: submit, follow, run workers.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    _add_wait_options(submit, with_wait_flag=True)

    status = commands.add_parser("status", help="show a job's record")
    status.add_argument("job_id")
    status.add_argument("--json", action="store_true", help="print the record as JSON")

    wait = commands.add_parser("wait", help="wait until a job is final")
    wait.add_argument("job_id")
    _add_wait_options(wait, with_wait_flag=False)

    quota = commands.add_parser("quota", help="show the shared Bedrock quota per model")
    quota.add_argument("--model-id", action="append", help="only this model (repeatable)")
    quota.add_argument("--json", action="store_true")

    dlq = commands.add_parser("dlq", help="failed jobs: list them, replay them")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="list failed jobs, oldest first")
    dlq_list.add_argument("--json", action="store_true")
    replay = dlq_commands.add_parser("replay", help="queue failed jobs again")
    replay.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    replay.add_argument("--all", action="store_true", help="every job in the dead-letter set")

    secret = commands.add_parser("webhook-secret", help="show or rotate the signing secret")
    secret.add_argument(
        "--rotate",
        action="store_true",
        help="new primary secret; the old one keeps signing for the overlap",
    )

    webhooks = commands.add_parser("webhooks", help="webhook deliveries: log, redeliver, recover")
    webhook_commands = webhooks.add_subparsers(
        dest="webhooks_command", required=True, metavar="ACTION"
    )
    webhook_log = webhook_commands.add_parser("log", help="a job's deliveries and attempts")
    webhook_log.add_argument("job_id")
    webhook_log.add_argument("--json", action="store_true")
    redeliver = webhook_commands.add_parser("redeliver", help="send a job's webhooks again")
    redeliver.add_argument("job_id")
    recover = webhook_commands.add_parser(
        "recover", help="send again every delivery that ran out of retries since TIME"
    )
    recover.add_argument(
        "--since",
        required=True,
        type=_parse_time,
        help="ISO 8601 time (2026-11-25T10:00:00Z) or a duration ago (90m, 2h, 3d)",
    )

    worker = commands.add_parser(
        "worker", help="run a Celery worker (extra arguments go to `celery worker`)"
    )
    worker.add_argument("-Q", "--queues", default=",".join(QUEUES))
    worker.add_argument("-c", "--concurrency", type=int, help="threads (default: setting)")
    worker.add_argument("-n", "--hostname", help="worker name, e.g. worker-interactive@%%h")
    worker.add_argument("celery_args", nargs=argparse.REMAINDER)
    return parser


def _add_wait_options(parser: argparse.ArgumentParser, *, with_wait_flag: bool) -> None:
    if with_wait_flag:
        parser.add_argument("--wait", action="store_true", help="wait until the job is final")
    parser.add_argument("--timeout", type=float, default=DEFAULT_WAIT_S, help="seconds to wait")
    parser.add_argument("--output", help="save the image here once it succeeded")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as e:
        for error in validation_errors(e):
            _error(f"setting IMAGEGEN_{error.field.upper()}: {error.message}")
        return EXIT_BAD_INPUT
    if args.command == "worker":
        return _run_worker(args, settings)
    try:
        with Client(settings) as client:
            return _COMMANDS[args.command](client, args)
    except InvalidRequestError as e:
        for error in e.errors:
            _error(str(error))
        return EXIT_BAD_INPUT
    except redis.RedisError as e:
        _error(f"Redis at {settings.redis_url} is not usable: {e}")
        return EXIT_UNAVAILABLE
    except (ImagegenError, ValueError, BotoCoreError, ClientError) as e:
        _error(str(e))
        return _exit_status(e)


def _exit_status(error: Exception) -> int:
    for kinds, status in _EXIT_STATUSES:
        if isinstance(error, kinds):
            return status
    return EXIT_JOB_UNSUCCESSFUL


_EXIT_STATUSES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
    ((JobConflictError, ValueError), EXIT_BAD_INPUT),
    (JobNotFoundError, EXIT_NOT_FOUND),
    (JobTimeoutError, EXIT_TIMEOUT),
    ((BotoCoreError, ClientError), EXIT_UNAVAILABLE),
)


def _submit(client: Client, args: argparse.Namespace) -> int:
    metadata = _json_object(args.metadata, "--metadata") if args.metadata else None
    request: dict[str, Any] = {
        "prompt": args.prompt,
        "aspect_ratio": args.aspect_ratio,
        "output_format": args.output_format,
        "seed": args.seed,
    }
    if args.negative_prompt:
        request["negative_prompt"] = args.negative_prompt
    record = client.submit(
        request,
        job_id=args.job_id,
        model_id=args.model_id,
        metadata=metadata,
        priority=args.priority,
        webhook_url=args.webhook,
        webhook_events=args.webhook_event,
    )
    if args.wait or args.output:
        record = client.wait(record.job_id, args.timeout)
    return _report(client, record, args)


def _status(client: Client, args: argparse.Namespace) -> int:
    record = client.get(args.job_id)
    _print_record(record, as_json=args.json)
    return EXIT_OK


def _wait(client: Client, args: argparse.Namespace) -> int:
    return _report(client, client.wait(args.job_id, args.timeout), args)


def _report(client: Client, record: JobRecord, args: argparse.Namespace) -> int:
    if args.output and record.status is JobStatus.SUCCEEDED:
        path = client.download(record, args.output)
        if not args.json:
            print(f"saved {path}", file=sys.stderr)
    _print_record(record, as_json=args.json)
    if record.is_terminal and record.status is not JobStatus.SUCCEEDED:
        return EXIT_JOB_UNSUCCESSFUL
    return EXIT_OK


def _print_record(record: JobRecord, *, as_json: bool) -> None:
    if as_json:
        print(record.model_dump_json())
        return
    parts = [record.job_id, record.status.value]
    if record.seed is not None:
        parts.append(f"seed={record.seed}")
    if record.width and record.height:
        parts.append(f"{record.width}x{record.height}")
    if record.s3_uri:
        parts.append(record.s3_uri)
    if record.finish_reason:
        parts.append(f"reason={record.finish_reason!r}")
    if record.error_code:
        parts.append(f"error={record.error_code}: {record.error_message}")
    print("  ".join(parts))


def _run_worker(args: argparse.Namespace, settings: Settings) -> NoReturn:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "--queues",
        args.queues,
        "--pool",
        settings.worker_pool,
        "--concurrency",
        str(args.concurrency or settings.worker_concurrency),
        "--loglevel",
        settings.log_level,
        "--events",
    ]
    if args.hostname:
        command += ["--hostname", args.hostname]
    command += [arg for arg in args.celery_args if arg != "--"]
    os.execv(sys.executable, command)  # noqa: S606  (a fixed argv, replacing this process)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        msg = f"{option} is not valid JSON: {e}"
        raise ValueError(msg) from e
    if not isinstance(value, dict):
        msg = f"{option} must be a JSON object"
        raise ValueError(msg)
    return value


def _error(message: str) -> None:
    print(f"imagegen: {message}", file=sys.stderr)


def _quota(client: Client, args: argparse.Namespace) -> int:
    statuses = client.quota(args.model_id)
    if args.json:
        print(json.dumps([dataclasses.asdict(s) for s in statuses]))
        return EXIT_OK
    rows = [("model", "configured/min", "effective/min", "tokens", "calls 1m", "throttles 1m")]
    rows += [
        (
            s.model_id,
            f"{s.configured_rpm:g}",
            f"{s.effective_rpm:.1f}",
            f"{s.tokens:.2f}",
            str(s.calls_last_minute),
            str(s.throttles_last_minute),
        )
        for s in statuses
    ]
    _print_table(rows)
    return EXIT_OK


def _dlq(client: Client, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        records = client.dead_letters.records()
        if args.json:
            print(json.dumps([r.model_dump(mode="json") for r in records]))
            return EXIT_OK
        rows = [("job id", "failed at", "attempts", "error")]
        rows += [
            (
                r.job_id,
                r.finished_at.isoformat(timespec="seconds") if r.finished_at else "-",
                str(r.attempts),
                f"{r.error_code}: {(r.error_message or '')[:60]}",
            )
            for r in records
        ]
        _print_table(rows)
        return EXIT_OK
    if not args.all and not args.job_ids:
        _error("dlq replay: name JOB_IDs or pass --all")
        return EXIT_BAD_INPUT
    wanted = client.dead_letters.job_ids() if args.all else args.job_ids
    replayed = client.dead_letters.replay(wanted)
    for job_id in replayed:
        print(job_id)
    skipped = sorted(set(wanted) - set(replayed))
    for job_id in skipped:
        _error(f"{job_id} is not a failed job; not replayed")
    return EXIT_OK if not skipped else EXIT_NOT_FOUND


def _webhook_secret(client: Client, args: argparse.Namespace) -> int:
    secrets = client.signing_secrets
    if args.rotate:
        print(secrets.rotate())
        others = secrets.active()[1:]
        if others:
            overlap_s = client.settings.webhook_secret_overlap_s
            print(f"the previous secret keeps signing for {overlap_s} s", file=sys.stderr)
        return EXIT_OK
    print(secrets.current())
    return EXIT_OK


def _webhooks(client: Client, args: argparse.Namespace) -> int:
    deliveries = client.webhook_deliveries
    if args.webhooks_command == "log":
        client.get(args.job_id)  # a clear "not found" for an unknown job
        found = deliveries.for_job(args.job_id)
        if args.json:
            print(json.dumps([d.model_dump(mode="json") for d in found]))
            return EXIT_OK
        for delivery in found:
            print(f"{delivery.delivery_id}  {delivery.state}  {delivery.url}")
            for entry in delivery.log:
                status = entry.status if entry.status is not None else "-"
                print(
                    f"  #{entry.attempt} {entry.at.isoformat(timespec='seconds')} "
                    f"status={status} {entry.latency_ms or 0} ms {entry.error or ''}".rstrip()
                )
        return EXIT_OK
    if args.webhooks_command == "redeliver":
        client.get(args.job_id)
        sent = deliveries.redeliver_job(args.job_id)
        if not sent:
            _error(f"job {args.job_id} has no webhook deliveries")
            return EXIT_NOT_FOUND
    else:
        sent = deliveries.recover(args.since)
    for delivery_id in sent:
        print(delivery_id)
    return EXIT_OK


def _parse_time(text: str) -> int:
    """Unix ms from an ISO 8601 time or from a duration ago such as 90m, 2h, 3d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return int((time.time() - int(text[:-1]) * units[text[-1]]) * 1000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        msg = f"not an ISO 8601 time or a duration like 2h: {text!r}"
        raise argparse.ArgumentTypeError(msg) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    print(format_table(rows))


_COMMANDS = {
    "submit": _submit,
    "status": _status,
    "wait": _wait,
    "quota": _quota,
    "dlq": _dlq,
    "webhook-secret": _webhook_secret,
    "webhooks": _webhooks,
}


if __name__ == "__main__":
    sys.exit(main())
