"""Fetching a job's input images at call time: from S3, or from the job whose output it takes.

Each image is read whole, checked again (format, the model's size limits) and base64-encoded
into the InvokeModel body; nothing of it is kept anywhere but in this attempt's memory.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.errors import InputImageError, InputImageUnavailableError, JobNotFoundError
from imagegen.inputs import UnusableImageError, image_facts, parse_image_ref
from imagegen.models import model_for
from imagegen.records import JobRecord, JobStatus
from imagegen.store.job_reads import JobReads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from imagegen.requests import ModelRequest

__all__ = ["fetch_inputs", "locate_input"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def locate_input(value: str, reads: JobReads, tenant: str | None) -> tuple[str, str]:
    """Where an input image of a job of ``tenant`` is: (bucket, key). A job's output must
    exist (the job succeeded) and be the same tenant's."""
    ref = parse_image_ref(value)
    if ref.kind == "s3":
        return ref.bucket, ref.key
    if ref.kind != "job":
        msg = f"{value} was never bound to a job of its chain"
        raise InputImageError(msg)
    try:
        source: JobRecord = reads.get(ref.job_id)
    except JobNotFoundError as e:
        msg = f"job {ref.job_id}, whose output this job takes, no longer exists"
        raise InputImageError(msg) from e
    if source.tenant != tenant:
        # Worded as a missing job: another tenant's job is not there for this one.
        msg = f"job {ref.job_id}, whose output this job takes, no longer exists"
        raise InputImageError(msg)
    if source.status is not JobStatus.SUCCEEDED or not source.s3_bucket or not source.s3_key:
        msg = f"job {ref.job_id}, whose output this job takes, ended {source.status.value}"
        raise InputImageError(msg)
    return source.s3_bucket, source.s3_key


def fetch_inputs(
    s3: S3Client,
    reads: JobReads,
    model_id: str,
    request: ModelRequest,
    *,
    tenant: str | None,
    max_bytes: int,
) -> dict[str, str]:
    """Each input image of ``request`` (a job of ``tenant``), by field, as base64 for the
    body."""
    model = model_for(model_id)
    limits = model.input_limits if model else None
    images: dict[str, str] = {}
    for field, value in request.image_inputs().items():
        bucket, key = locate_input(value, reads, tenant)
        where = f"{field} (s3://{bucket}/{key})"
        try:
            obj = s3.get_object(Bucket=bucket, Key=key)
            if int(obj["ContentLength"]) > max_bytes:
                msg = f"{where} is {obj['ContentLength']:,} bytes; the limit is {max_bytes:,}"
                raise InputImageError(msg)
            data = obj["Body"].read()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in _NOT_FOUND or code == "AccessDenied":
                msg = f"{where} cannot be read ({code})"
                raise InputImageError(msg) from e
            msg = f"{where} could not be fetched ({code or 'error'})"
            raise InputImageUnavailableError(msg) from e
        except BotoCoreError as e:
            msg = f"{where} could not be fetched ({type(e).__name__})"
            raise InputImageUnavailableError(msg) from e
        try:
            facts = image_facts(data)
        except UnusableImageError as e:
            raise InputImageError(f"{where} {e}") from e
        problem = limits.problem(facts.width, facts.height) if limits else None
        if problem is not None:
            raise InputImageError(f"{where} {problem}")
        images[field] = base64.b64encode(data).decode()
    return images
