"""What every ``imagegen`` command shares: exit statuses, printing, argument helpers."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from imagegen.text import parse_duration_s
from imagegen_client import API_KEY_ENV
from producer.cli.backends import JobView
from producer.client import DEFAULT_WAIT_S
from producer.tables import format_table

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BUSY",
    "EXIT_JOB_UNSUCCESSFUL",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "add_api_option",
    "add_wait_options",
    "error",
    "parse_time_ms",
    "print_record",
    "print_table",
]

EXIT_OK = 0
EXIT_JOB_UNSUCCESSFUL = 1
EXIT_BAD_INPUT = 2
EXIT_TIMEOUT = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5
EXIT_BUSY = 6


def error(message: str) -> None:
    print(f"imagegen: {message}", file=sys.stderr)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    print(format_table(rows))


def print_record(record: JobView, *, as_json: bool) -> None:
    if as_json:
        print(record.model_dump_json())
        return
    parts = [record.job_id, str(record.status)]
    if record.queue_position is not None:
        parts.append(f"position={record.queue_position}")
    if record.estimated_start_at is not None:
        parts.append(f"starts~{record.estimated_start_at.isoformat(timespec='seconds')}")
    if record.seed is not None:
        parts.append(f"seed={record.seed}")
    if record.width and record.height:
        parts.append(f"{record.width}x{record.height}")
    if record.s3_uri:
        parts.append(record.s3_uri)
    if record.cached:
        parts.append(f"cached-from={record.cache_source_job_id}")
    if record.cost_usd is not None:
        parts.append(f"cost=${record.cost_usd:.2f}")
    if record.finish_reason:
        parts.append(f"reason={record.finish_reason!r}")
    if record.error_code:
        parts.append(f"error={record.error_code}: {record.error_message}")
    print("  ".join(parts))


def add_wait_options(
    parser: argparse.ArgumentParser,
    *,
    with_wait_flag: bool,
    what: str = "the job",
    output: str = "save the image here once it succeeded",
) -> None:
    if with_wait_flag:
        parser.add_argument(
            "--wait", action="store_true", help=f"follow {what} with a progress bar until final"
        )
    parser.add_argument("--timeout", type=float, default=DEFAULT_WAIT_S, help="seconds to wait")
    parser.add_argument("--output", help=output)
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def add_api_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        metavar="URL",
        help=f"use the HTTP API at URL with the key in {API_KEY_ENV} (default: Redis directly)",
    )


def duration_s(text: str) -> float:
    """Seconds from 90s, 10m, 2h, 3d (argparse type)."""
    try:
        return parse_duration_s(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def parse_time_ms(text: str) -> int:
    """Unix ms from an ISO 8601 time or from a duration ago such as 90m, 2h, 3d."""
    try:
        return int((time.time() - parse_duration_s(text)) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        msg = f"not an ISO 8601 time or a duration like 2h: {text!r}"
        raise argparse.ArgumentTypeError(msg) from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
