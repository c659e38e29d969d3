"""``imagegen recover``: after Redis lost data, re-create the final records (and webhooks) of the
jobs whose images are in S3 (``producer.recover``). Prints what it would do unless ``--apply``."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from producer.cli.common import EXIT_OK, parse_time_ms
from producer.client import Client
from producer.recover import Recovery, Verdict

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    recover = commands.add_parser(
        "recover",
        help="re-create the records of lost jobs from their images in S3 (dry run unless --apply)",
        description="Match the images in S3 to jobs whose records Redis no longer has, and "
        "re-create the final records (and queue the webhooks) the images prove. Without "
        "--apply nothing changes: it prints what it would do. Running it again re-creates "
        "nothing more.",
    )
    recover.add_argument(
        "--apply", action="store_true", help="re-create the records (default: only print)"
    )
    recover.add_argument(
        "--since",
        type=parse_time_ms,
        help="images stored since this ISO 8601 time or duration ago (default: the job retention)",
    )
    recover.add_argument("--tenant", help="only this tenant's jobs")
    recover.add_argument(
        "--all", action="store_true", help="also list the images whose jobs have their record"
    )
    recover.add_argument("--json", action="store_true", help="one JSON document")
    recover.set_defaults(handler=_recover)


def _recover(client: Client, args: argparse.Namespace) -> int:
    recovery = Recovery(client.settings, jobs=client.jobs, tenants=client.tenants, s3=client.s3())
    since_ms = args.since or recovery.default_since_ms(int(time.time() * 1000))
    counts: Counter[str] = Counter()
    listed = []
    for finding in recovery.scan(since_ms, tenant=args.tenant):
        verdict = finding.verdict.value
        if finding.verdict is Verdict.RECREATE and args.apply:
            verdict = "recreated" if recovery.apply(finding) else "has_record"
            if verdict == "recreated" and finding.webhook_url:
                counts["webhooks_queued"] += 1
        counts[verdict] += 1
        if finding.verdict is Verdict.HAS_RECORD and not args.all:
            continue
        summary = finding.summary() | {"verdict": verdict}
        listed.append(summary)
        if not args.json:
            print(_line(summary, applied=args.apply))
    totals = {
        "applied": bool(args.apply),
        "recreate": counts["recreate"],
        "recreated": counts["recreated"],
        "webhooks_queued": counts["webhooks_queued"],
        "has_record": counts["has_record"],
        "unproven": counts["unproven"],
    }
    if args.json:
        print(json.dumps({"jobs": listed, "totals": totals}))
        return EXIT_OK
    if args.apply:
        print(
            f"{totals['recreated']} records re-created ({totals['webhooks_queued']} with their "
            f"webhook queued), {totals['has_record']} images have their record, "
            f"{totals['unproven']} unproven"
        )
    else:
        print(
            f"{totals['recreate']} records would be re-created, {totals['has_record']} images "
            f"have their record, {totals['unproven']} unproven (run again with --apply)"
        )
    return EXIT_OK


def _line(summary: dict[str, object], *, applied: bool) -> str:
    verdict = str(summary["verdict"])
    shown = "would recreate" if verdict == "recreate" and not applied else verdict
    parts = [f"{shown:<15}", str(summary["job_id"]), str(summary["s3_key"])]
    if summary.get("tenant"):
        parts.append(f"tenant={summary['tenant']}")
    if summary.get("webhook_url"):
        parts.append(f"webhook={summary['webhook_url']}")
    for note in ("reason", "webhook_note"):
        if summary.get(note):
            parts.append(f"({summary[note]})")
    return "  ".join(parts)
