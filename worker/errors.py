"""Errors raised while running a job. One shallow hierarchy; each carries a stable ``code``."""

from __future__ import annotations

__all__ = [
    "BedrockCallError",
    "InvalidModelOutputError",
    "JobError",
    "StorageError",
]


class JobError(Exception):
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
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.retry_after_s = retry_after_s


class InvalidModelOutputError(JobError):
    """Bedrock answered 200 but the image is missing, corrupt or not in the requested format."""

    code = "InvalidModelOutput"


class StorageError(JobError):
    """The image could not be written to S3."""

    code = "StorageError"
