"""Every error the service raises on purpose, in one shallow hierarchy under ``ImagegenError``.

Callers (library, CLI, HTTP API) see the submission and lookup errors; a worker raises the
``JobError`` family while running one attempt (each with a stable ``code`` for records and logs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BedrockCallError",
    "FieldError",
    "IdempotencyConflictError",
    "ImagegenError",
    "InputImageError",
    "InputImageUnavailableError",
    "InvalidModelOutputError",
    "InvalidRequestError",
    "JobConflictError",
    "JobError",
    "JobNotFoundError",
    "JobTimeoutError",
    "QueueFullError",
    "ReplicaAckTimeoutError",
    "SigningSecretMissingError",
    "SigningSecretSettingError",
    "StorageError",
    "WebhookVerificationError",
]


class ImagegenError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One rule one field broke: ``field`` is a dotted path such as ``request.aspect_ratio``."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidRequestError(ImagegenError, ValueError):
    """A job was refused before it was enqueued; ``errors`` names each bad field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("invalid job: " + "; ".join(str(e) for e in self.errors))


class JobNotFoundError(ImagegenError, LookupError):
    """No record exists for this job id (never submitted, or past its retention)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} not found")


class JobTimeoutError(ImagegenError, TimeoutError):
    """A wait ended before the job reached a final status."""

    def __init__(self, job_id: str, timeout_s: float, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"job {job_id} still {status} after {timeout_s:g} s")


class JobConflictError(ImagegenError):
    """A job id was reused for a different request; the original job is left untouched."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id} already exists with a different request")


class ReplicaAckTimeoutError(ImagegenError):
    """A write reached the Redis primary, but no replica confirmed it in time: it may be lost if
    the primary fails now. Retrying it (the same job id or idempotency key) is safe."""

    def __init__(self, timeout_s: float, replies: Sequence[object]) -> None:
        # What the write answered on the primary, for a caller that goes on anyway.
        self.replies = list(replies)
        self.retry_after_s = max(1, round(timeout_s))
        super().__init__(
            f"no Redis replica confirmed the write within {timeout_s:g} s; it is on the primary "
            "only for now: retry with the same job id or idempotency key"
        )


class QueueFullError(ImagegenError):
    """Too many jobs are open (not finished yet); try again after ``retry_after_s``."""

    def __init__(
        self, scope: str, queued: int, limit: int, retry_after_s: int, *, setting: str = ""
    ) -> None:
        self.retry_after_s = retry_after_s
        # The setting that holds the cap (IMAGEGEN_MAX_QUEUED_...), for refusals kept in a record.
        self.setting = setting
        super().__init__(
            f"{scope} has {queued} jobs not finished yet (limit {limit}); retry in "
            f"{retry_after_s} s"
        )


class IdempotencyConflictError(ImagegenError):
    """An Idempotency-Key was used before for a different request."""

    def __init__(self, key: str, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(
            f"Idempotency-Key {key!r} was used for job {job_id} with a different request"
        )


class JobError(ImagegenError):
    """Something that stopped one attempt of a job; ``code`` is what the record and logs show."""

    code = "JobError"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class BedrockCallError(JobError):
    """InvokeModel did not return a usable answer: an AWS error code, a network failure or an
    ``Inference error`` finish reason."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        # Bedrock's id of the request, when it answered (x-amzn-RequestId).
        self.request_id = request_id


class InvalidModelOutputError(JobError):
    """Bedrock answered 200 but the image is missing, corrupt or not in the requested format."""

    code = "InvalidModelOutput"


class InputImageError(JobError):
    """An input image cannot be used: gone, unreadable as an image, or outside the model's
    limits, or the job it names ended without one. Final: a retry would meet the same image."""

    code = "InputImageInvalid"


class InputImageUnavailableError(JobError):
    """An input image could not be fetched from S3 just now (a network or service error)."""

    code = "InputImageUnavailable"


class StorageError(JobError):
    """The image could not be written to S3."""

    code = "StorageError"


class WebhookVerificationError(ImagegenError):
    """A webhook did not verify: missing header, stale timestamp or no matching signature."""


class SigningSecretMissingError(ImagegenError, LookupError):
    """No webhook signing secret is stored for a scope: none was ever made, or Redis lost it.
    Never made on a read: a receiver could not verify a secret made behind its back."""

    def __init__(self, tenant: str | None) -> None:
        self.tenant = tenant
        scope = f"tenant {tenant}" if tenant else "jobs without a tenant"
        command = f"imagegen webhook-secret{f' --tenant {tenant}' if tenant else ''}"
        super().__init__(
            f"no webhook signing secret for {scope}: its deliveries wait until one exists. If "
            f"receivers hold one that Redis lost, restore it (`{command} --restore`, the secret "
            f"on stdin); otherwise make one (`{command} --create`)"
        )


class SigningSecretSettingError(ImagegenError):
    """The secrets of jobs without a tenant come from a setting and cannot be changed here."""

    def __init__(self) -> None:
        super().__init__(
            "the signing secret of jobs without a tenant comes from IMAGEGEN_WEBHOOK_SECRET: "
            "change it there (newest first, space-separated, to keep the old one signing)"
        )
