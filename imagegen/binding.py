"""Binding a submission's input images before anything is queued.

Each input a request names is checked where it is: an S3 object must lie where the tenant may
read (its own uploads, or a prefix the settings allow) and its header must show a PNG, JPEG or
WebP image within the model's limits; a job's output must be the same tenant's job, and not one
that ended without an image. A job whose input is the output of a job not final yet waits for it
(``after_job_id``). What the inputs are (ETags, or the source job's image hash) goes into the
cache key, so a fixed-seed edit of the same image is served from the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagegen.contract import JobSpec
from imagegen.errors import FieldError, InvalidRequestError, JobNotFoundError
from imagegen.ids import is_valid_job_id, new_job_id, scoped_job_id
from imagegen.inputs import (
    ImageFacts,
    ImageRef,
    UnusableImageError,
    image_facts,
    parse_image_ref,
    probe_s3_image,
)
from imagegen.models import model_for
from imagegen.records import JobRecord, JobStatus
from imagegen.s3 import s3_uri
from imagegen.settings import Settings
from imagegen.store.job_reads import JobReads

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["BoundInputs", "InputBinder", "StoredUpload", "store_upload", "upload_key_prefix"]

NO_TENANT_FOLDER = "_"
UPLOAD_CONTENT_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}
_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def upload_key_prefix(settings: Settings, tenant: str | None) -> str:
    """Where a tenant's uploads live in ``s3_bucket``: ``{uploads_prefix}/{tenant}/``."""
    return f"{settings.uploads_prefix.strip('/')}/{tenant or NO_TENANT_FOLDER}/"


@dataclass(frozen=True)
class StoredUpload:
    """An input image stored under a tenant's uploads prefix."""

    uri: str
    bucket: str
    key: str
    facts: ImageFacts


def upload_key(settings: Settings, tenant: str | None, image_format: str) -> str:
    """A new key under the tenant's uploads prefix."""
    return f"{upload_key_prefix(settings, tenant)}{new_job_id()}.{_EXTENSIONS[image_format]}"


def store_upload(
    s3: S3Client, settings: Settings, tenant: str | None, data: bytes, content_type: str | None
) -> StoredUpload:
    """Check an uploaded image (size, format from its bytes, the declared type) and store it
    under the tenant's uploads prefix. Raises ``UnusableImageError`` saying what is wrong."""
    if len(data) > settings.input_image_max_bytes:
        msg = f"is {len(data):,} bytes; the limit is {settings.input_image_max_bytes:,}"
        raise UnusableImageError(msg)
    facts = image_facts(data)
    declared = UPLOAD_CONTENT_TYPES.get((content_type or "").split(";")[0].strip().lower())
    if declared is not None and declared != facts.format:
        msg = f"Content-Type says {declared}, the image is {facts.format}"
        raise UnusableImageError(msg)
    key = upload_key(settings, tenant, facts.format)
    s3.put_object(
        Bucket=settings.s3_bucket,
        Key=key,
        Body=data,
        ContentType=f"image/{facts.format}",
        Metadata={"tenant": tenant or NO_TENANT_FOLDER},
    )
    return StoredUpload(s3_uri(settings.s3_bucket, key), settings.s3_bucket, key, facts)


@dataclass(frozen=True)
class BoundInputs:
    """One job's inputs, checked: its request with job ids in their stored form, what its inputs
    are (None when some are not known yet), and the job it waits for."""

    spec: JobSpec
    digest: str | None = None
    after_job_id: str | None = None


class InputBinder:
    """Checks and binds the input images of one submission."""

    def __init__(
        self,
        settings: Settings,
        reads: JobReads,
        s3: Callable[[], S3Client],
    ) -> None:
        self._settings = settings
        self._reads = reads
        self._s3 = s3

    def bind(
        self, specs: Sequence[JobSpec], tenant: str | None, job_ids: Sequence[str]
    ) -> list[BoundInputs]:
        """Each job's inputs; ``job_ids`` are the ids the jobs will have (a later job may take
        an earlier one's output). Raises ``InvalidRequestError`` naming every bad input."""
        bound, errors = [], []
        for index, spec in enumerate(specs):
            try:
                bound.append(self._bind_one(spec, tenant, set(job_ids[:index])))
            except InvalidRequestError as e:
                prefix = f"jobs[{index}]." if len(specs) > 1 else ""
                errors += [FieldError(prefix + error.field, error.message) for error in e.errors]
        if errors:
            raise InvalidRequestError(errors)
        return bound

    def _bind_one(self, spec: JobSpec, tenant: str | None, earlier: set[str]) -> BoundInputs:
        inputs = spec.request.image_inputs()
        if not inputs:
            return BoundInputs(spec)
        model = model_for(spec.model_id or self._settings.model_id)
        digests: list[str] = []
        updates: dict[str, str] = {}
        waits_for: list[tuple[str, str]] = []
        errors: list[FieldError] = []
        for field, value in inputs.items():
            where = f"request.{field}"
            try:
                ref = parse_image_ref(value)
                if ref.kind == "step":
                    msg = '{"step": n} names a step of a chain; submit it as one (/v1/chains)'
                    raise UnusableImageError(msg)
                if ref.kind == "job":
                    job_id, source = self._source_job(ref.job_id, tenant, earlier)
                    updates[field] = f"job:{job_id}"
                    if source is None or not source.is_terminal:
                        waits_for.append((field, job_id))
                        continue
                    digests.append(f"{field}=sha256:{source.sha256}")
                    continue
                facts = self._probe(ref, tenant)
                problem = (
                    model.input_limits.problem(facts.width, facts.height)
                    if (model and model.input_limits)
                    else None
                )
                if problem is not None:
                    raise UnusableImageError(f"{value} {problem}")
                digests.append(f"{field}=etag:{facts.etag}:{facts.bytes}")
            except UnusableImageError as e:
                errors.append(FieldError(where, str(e)))
        if len(waits_for) > 1:
            errors.append(
                FieldError(
                    f"request.{waits_for[1][0]}",
                    "at most one input may be the output of a job that has not finished yet",
                )
            )
        if errors:
            raise InvalidRequestError(errors)
        request = spec.request.model_copy(update=updates) if updates else spec.request
        bound = spec.model_copy(update={"request": request})
        if waits_for:
            return BoundInputs(bound, None, waits_for[0][1])
        digest = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
        return BoundInputs(bound, digest)

    def _source_job(
        self, job_id: str, tenant: str | None, earlier: set[str]
    ) -> tuple[str, JobRecord | None]:
        """The same tenant's job whose output is asked for (by the id the tenant chose or by its
        stored id, as the API finds jobs), if it can still give one: its stored id and record
        (None for a job of the same submission, not stored yet)."""
        candidates = [job_id]
        if tenant and is_valid_job_id(job_id):
            candidates.insert(0, scoped_job_id(tenant, job_id))
        source = None
        for candidate in candidates:
            if candidate in earlier:
                return candidate, None
            try:
                found = self._reads.get(candidate)
            except JobNotFoundError:
                continue
            if found.tenant == tenant:
                job_id, source = candidate, found
                break
        if source is None:
            msg = f"there is no job {job_id}"
            raise UnusableImageError(msg)
        if source.is_terminal and not (
            source.status is JobStatus.SUCCEEDED and source.s3_key and source.sha256
        ):
            msg = f"job {job_id} ended {source.status.value} and has no image"
            raise UnusableImageError(msg)
        return job_id, source

    def _probe(self, ref: ImageRef, tenant: str | None) -> ImageFacts:
        settings = self._settings
        if not self._may_read(ref, tenant):
            msg = (
                f"{ref.canonical} is outside what this tenant may use: its uploads "
                f"(s3://{settings.s3_bucket}/{upload_key_prefix(settings, tenant)}) or "
                "IMAGEGEN_INPUT_S3_PREFIXES"
            )
            raise UnusableImageError(msg)
        return probe_s3_image(
            self._s3(), ref.bucket, ref.key, max_bytes=settings.input_image_max_bytes
        )

    def _may_read(self, ref: ImageRef, tenant: str | None) -> bool:
        settings = self._settings
        own = (settings.s3_bucket, upload_key_prefix(settings, tenant))
        allowed = [own, *(_split_prefix(item) for item in settings.input_s3_prefixes)]
        return any(
            ref.bucket == bucket and ref.key.startswith(prefix) and ".." not in ref.key
            for bucket, prefix in allowed
        )


def _split_prefix(item: str) -> tuple[str, str]:
    bucket, _, prefix = item.strip("/").partition("/")
    return bucket, f"{prefix}/" if prefix else ""
