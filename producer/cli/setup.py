"""``imagegen doctor | models``: is the deployment able to run jobs, and what models it offers."""

from __future__ import annotations

import argparse
import json

from imagegen.models import model_for
from producer.cli.backends import Jobs
from producer.cli.common import (
    EXIT_JOB_UNSUCCESSFUL,
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_api_option,
    error,
    print_table,
)
from producer.cli.params import describe_fields
from producer.client import Client
from producer.doctor import Doctor

__all__ = ["register"]

_MARKS = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check credentials, region, model access, S3 and quotas; print what to fix",
    )
    doctor.add_argument("--model-id", action="append", help="check only this model (repeatable)")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(handler=_doctor)
    models = commands.add_parser(
        "models", help="the models a job may name, with their prices; or one model's fields"
    )
    models.add_argument(
        "model_id", nargs="?", metavar="MODEL", help="show this model's request fields"
    )
    models.add_argument("--json", action="store_true")
    add_api_option(models)
    models.set_defaults(jobs_handler=_models)


def _doctor(client: Client, args: argparse.Namespace) -> int:
    checks = Doctor(client.settings, redis_client=client.jobs.redis).run(args.model_id)
    failed = any(check.status == "fail" for check in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}))
        return EXIT_JOB_UNSUCCESSFUL if failed else EXIT_OK
    print_table(
        [("check", "status", "what was seen")]
        + [(c.name, _MARKS[c.status], c.detail) for c in checks]
    )
    fixes = [c for c in checks if c.fix and c.status in {"fail", "warn"}]
    if fixes:
        print("\nTo fix:")
        for check in fixes:
            print(f"- {check.name}: {check.fix}")
    warned = sum(check.status == "warn" for check in checks)
    if failed:
        print("\nProblems found.")
    elif warned:
        print(f"\nReady to run jobs, with {warned} warning{'s' if warned > 1 else ''} above.")
    else:
        print("\nReady to run jobs.")
    return EXIT_JOB_UNSUCCESSFUL if failed else EXIT_OK


def _models(jobs: Jobs, args: argparse.Namespace) -> int:
    if args.model_id:
        return _fields(args.model_id, as_json=args.json)
    found = jobs.models()
    if args.json:
        print(json.dumps({"models": found}))
        return EXIT_OK
    print_table(
        [("model id", "kind", "$/image", "input images", "required")]
        + [
            (
                m["model_id"],
                m["kind"],
                f"{m['price_usd']:.2f}",
                ", ".join(m.get("input_images", [])) or "-",
                ", ".join(m.get("required", [])) or "-",
            )
            for m in found
        ]
    )
    return EXIT_OK


def _fields(model_id: str, *, as_json: bool) -> int:
    """One model's request fields, as ``submit --param`` takes them."""
    if model_for(model_id) is None:
        error(f"{model_id} is not a model of the registry (imagegen models lists them)")
        return EXIT_NOT_FOUND
    fields = describe_fields(model_id)
    if as_json:
        print(json.dumps({"model_id": model_id, "fields": fields}))
        return EXIT_OK
    rows = [("field", "required", "default", "type")]
    rows += [
        (
            f["field"],
            "yes" if f["required"] else "",
            "" if f["default"] is None else str(f["default"]),
            f["type"],
        )
        for f in fields
    ]
    print_table(rows)
    return EXIT_OK
