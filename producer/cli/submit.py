"""``imagegen submit | upload | chain``: a job for any model of the registry, its input images, and
chains of steps, through Redis or the HTTP API (``--api``).

A job's request holds only what the caller gave (the prompt, the shortcut flags, ``--param``,
``--request``, ``--image``); every other field takes the model's default. Files named as input
images are uploaded first, as ``POST /v1/uploads`` stores them, and the job names the upload.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from imagegen.contract import ASPECT_RATIOS, DEFAULT_EVENTS, EVENT_TYPES, OUTPUT_FORMATS
from imagegen.errors import FieldError, InvalidRequestError
from imagegen.inputs import UnusableImageError
from imagegen.messages import JOB_QUEUES
from imagegen.models import DEFAULT_MODEL_ID, request_type_for
from imagegen.text import parse_json_object
from producer.cli.backends import Jobs
from producer.cli.common import (
    EXIT_OK,
    add_api_option,
    add_wait_options,
    duration_s,
)
from producer.cli.jobs import report_chain, report_job
from producer.cli.params import LocalImage, RequestParts, build_request, read_json_argument
from producer.cli.progress import ProgressBar, follow_chain, follow_job

__all__ = ["register"]

_MODEL_HELP = "Bedrock model id (imagegen models lists them; default: the configured one)"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_submit(commands)

    upload = commands.add_parser(
        "upload", help="store an input image; prints the reference a job names it by"
    )
    upload.add_argument("file", help="a PNG, JPEG or WebP image")
    upload.add_argument("--tenant", help="upload for this tenant (its jobs may name it)")
    upload.add_argument("--json", action="store_true", help="print the whole upload as JSON")
    add_api_option(upload)
    upload.set_defaults(jobs_handler=_upload)

    chain = commands.add_parser(
        "chain",
        help="submit steps that each take the previous step's image (generate, cut out, upscale)",
    )
    chain.add_argument(
        "--step",
        nargs="+",
        action="append",
        metavar=("MODEL", "FIELD=VALUE"),
        help="one step: a model id and its fields (repeat, in order); a step's input image "
        "is the previous step's unless one is given (FILE, s3://..., job:ID or step:N)",
    )
    chain.add_argument(
        "--steps",
        metavar="JSON|@FILE",
        help='the steps as a JSON array of jobs ({"model_id": ..., "request": {...}}; '
        '{"step": n} names step n\'s image)',
    )
    chain.add_argument("--tenant", help="submit on behalf of this tenant")
    add_wait_options(
        chain,
        with_wait_flag=True,
        what="the chain",
        output="save the final image here once the chain succeeded",
    )
    add_api_option(chain)
    chain.set_defaults(jobs_handler=_chain)


def _register_submit(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    submit = commands.add_parser(
        "submit", help="submit one job to any model (fields as --param, images as --image)"
    )
    submit.add_argument(
        "prompt", nargs="?", help="what the image should show (for models with a prompt)"
    )
    submit.add_argument("--model", "--model-id", dest="model_id", help=_MODEL_HELP)
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a request field of the model, typed as the model takes it (repeatable)",
    )
    submit.add_argument(
        "--request", metavar="JSON|@FILE", help="request fields as a JSON object (or a file)"
    )
    submit.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="[FIELD=]FILE|s3://...|job:ID",
        help="an input image: a file (uploaded), an S3 object or another job's image; fills "
        "the model's image fields in order, or the one named (mask=FILE)",
    )
    submit.add_argument("--negative-prompt", help="what to keep out of the image")
    submit.add_argument("--aspect-ratio", choices=ASPECT_RATIOS)
    submit.add_argument("--output-format", choices=OUTPUT_FORMATS)
    submit.add_argument("--seed", help="0 = random (the default)")
    submit.add_argument("--job-id", help="your own job id; resubmitting it is a no-op")
    submit.add_argument("--priority", choices=JOB_QUEUES, help="default: interactive")
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
    add_api_option(submit)
    submit.set_defaults(jobs_handler=_submit)


def _request_parts(args: argparse.Namespace) -> RequestParts:
    base = read_json_argument(args.request, "--request") if args.request else None
    if base is not None and not isinstance(base, dict):
        raise InvalidRequestError([FieldError("--request", "must be a JSON object")])
    shortcuts = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "aspect_ratio": args.aspect_ratio,
        "output_format": args.output_format,
        "seed": args.seed,
    }
    return RequestParts(base=base, fields=shortcuts, params=args.param, images=args.image)


def upload_local_images(
    jobs: Jobs, request: Mapping[str, Any], tenant: str | None, where: str = "request"
) -> dict[str, Any]:
    """The request with each local file uploaded and named by its S3 URI."""
    found, errors = dict(request), []
    for field, value in request.items():
        if not isinstance(value, LocalImage):
            continue
        try:
            found[field] = jobs.upload(value.path, tenant=tenant)["image"]
        except UnusableImageError as e:
            errors.append(FieldError(f"{where}.{field}", f"{value.path}: {e}"))
    if errors:
        raise InvalidRequestError(errors)
    return found


def _submit(jobs: Jobs, args: argparse.Namespace) -> int:
    model_id = args.model_id or jobs.default_model_id or DEFAULT_MODEL_ID
    request = build_request(model_id, _request_parts(args))
    job: dict[str, Any] = {"request": upload_local_images(jobs, request, args.tenant)}
    envelope = {
        "model_id": args.model_id,
        "job_id": args.job_id,
        "priority": args.priority,
        "webhook_url": args.webhook,
        "webhook_events": args.webhook_event,
        "metadata": parse_json_object(args.metadata, "--metadata") if args.metadata else None,
        "expires_at": (
            (datetime.now(UTC) + timedelta(seconds=args.expires_in)).isoformat()
            if args.expires_in
            else None
        ),
    }
    job |= {name: value for name, value in envelope.items() if value is not None}
    record = jobs.submit(job, tenant=args.tenant, idempotency_key=args.idempotency_key)
    if args.wait or args.output:
        record = follow_job(jobs, record.job_id, args.timeout, ProgressBar(1))
    return report_job(jobs, record, args)


def _upload(jobs: Jobs, args: argparse.Namespace) -> int:
    path = Path(args.file).expanduser()
    try:
        uploaded = jobs.upload(path, tenant=args.tenant)
    except UnusableImageError as e:
        raise InvalidRequestError([FieldError("file", f"{path}: {e}")]) from e
    print(json.dumps(uploaded) if args.json else uploaded["image"])
    return EXIT_OK


def chain_steps(
    jobs: Jobs, step_args: Sequence[Sequence[str]], tenant: str | None
) -> list[dict[str, Any]]:
    """Each ``--step MODEL FIELD=VALUE...`` as a job; a later step without an input image
    takes the previous step's."""
    steps, errors = [], []
    for index, (model_id, *assignments) in enumerate(step_args):
        where = f"steps[{index}].request"
        try:
            request = build_request(model_id, RequestParts(params=assignments))
            image_fields = request_type_for(model_id).IMAGE_FIELDS
            if index and image_fields and image_fields[0] not in request:
                request[image_fields[0]] = {"step": index - 1}
            request = upload_local_images(jobs, request, tenant, where=where)
        except InvalidRequestError as e:
            errors += [
                FieldError(item.field.replace("request", where, 1), item.message)
                for item in e.errors
            ]
            continue
        steps.append({"model_id": model_id, "request": request})
    if errors:
        raise InvalidRequestError(errors)
    return steps


def _chain(jobs: Jobs, args: argparse.Namespace) -> int:
    if bool(args.step) == bool(args.steps):
        msg = "give the steps as --step MODEL FIELD=VALUE... (repeated) or as --steps, not both"
        raise InvalidRequestError([FieldError("--step", msg)])
    if args.steps:
        steps = read_json_argument(args.steps, "--steps")
        if not isinstance(steps, list):
            raise InvalidRequestError([FieldError("--steps", "must be a JSON array of jobs")])
    else:
        steps = chain_steps(jobs, args.step, args.tenant)
    chain_id, job_ids = jobs.submit_chain(steps, tenant=args.tenant)
    print(f"chain {chain_id}: {len(job_ids)} steps queued", file=sys.stderr)
    if not (args.wait or args.output):
        print(chain_id)
        return EXIT_OK
    chain = follow_chain(jobs, chain_id, args.timeout, ProgressBar(len(job_ids)))
    return report_chain(jobs, chain, args)
