"""What the client raises: one base class, the API's problems by status, and the outcomes of
waiting (a job that ended without an image, a wait that ran out of time)."""

from __future__ import annotations

from collections.abc import Mapping

from imagegen_client.records import Batch, Chain, Job, Problem, ProblemField

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "AuthenticationError",
    "BadRequestError",
    "ChainFailedError",
    "ConflictError",
    "ImagegenClientError",
    "InvalidRequestError",
    "JobFailedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "StreamEndedError",
    "WaitTimeoutError",
    "api_error",
]


class ImagegenClientError(Exception):
    """Everything this client raises."""


class ApiError(ImagegenClientError):
    """The API answered with an error: its problem (title, detail, each bad field)."""

    def __init__(
        self, problem: Problem, headers: Mapping[str, str], retry_after_s: float | None = None
    ) -> None:
        fields = "; ".join(f"{e.field}: {e.message}" for e in problem.errors)
        super().__init__(
            f"{problem.status} {problem.title}: {problem.detail}"
            + (f" ({fields})" if fields else "")
        )
        self.problem = problem
        self.headers = dict(headers)
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return self.problem.status

    @property
    def title(self) -> str:
        return self.problem.title

    @property
    def errors(self) -> list[ProblemField]:
        return self.problem.errors


class BadRequestError(ApiError):
    """400: the body or a header could not be read."""


class AuthenticationError(ApiError):
    """401: no API key, or an unknown or revoked one."""


class NotFoundError(ApiError):
    """404: no such job, batch or chain (another tenant's is as absent as a missing one)."""


class ConflictError(ApiError):
    """409: the job is already final, has no image (yet), or its id is taken."""


class PayloadTooLargeError(ApiError):
    """413: the body, the batch or the image is too large."""


class InvalidRequestError(ApiError):
    """422: the request breaks a rule; ``errors`` names each field."""


class RateLimitedError(ApiError):
    """429: too many open jobs, streams or bad keys; retried while ``Retry-After`` allowed."""


class ServiceUnavailableError(ApiError):
    """503: the image store did not answer; retried while ``Retry-After`` allowed."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}


def api_error(
    problem: Problem, headers: Mapping[str, str], retry_after_s: float | None = None
) -> ApiError:
    """The error class of the problem's status (``ApiError`` for any other)."""
    kind = _BY_STATUS.get(problem.status, ApiError)
    return kind(problem, headers, retry_after_s)


class ApiConnectionError(ImagegenClientError):
    """The API could not be reached (refused, reset, DNS)."""


class RequestTimeoutError(ImagegenClientError, TimeoutError):
    """One request took longer than the client's timeout."""


class StreamEndedError(ImagegenClientError):
    """The event stream ended before the job was final (``event: error``: the key was
    revoked)."""


class JobFailedError(ImagegenClientError):
    """The job ended without an image: failed, filtered, canceled, expired or over budget.
    ``job`` is its final record (``error_code``, ``error_message``, ``finish_reason``)."""

    def __init__(self, job: Job) -> None:
        reason = job.error_code or job.finish_reason or ""
        detail = f": {reason}" + (f" ({job.error_message})" if job.error_message else "")
        super().__init__(f"job {job.job_id} ended {job.status.value}{detail if reason else ''}")
        self.job = job


class ChainFailedError(ImagegenClientError):
    """The chain ended without its image; ``chain.reason`` names the step that stopped it."""

    def __init__(self, chain: Chain) -> None:
        super().__init__(f"chain {chain.chain_id} failed: {chain.reason or 'a step failed'}")
        self.chain = chain


class WaitTimeoutError(ImagegenClientError, TimeoutError):
    """A wait ran out of time; ``last_seen`` is the job, batch or chain as last read."""

    def __init__(self, what: str, timeout_s: float, last_seen: Job | Batch | Chain) -> None:
        super().__init__(f"{what} not final after {timeout_s:g} s")
        self.timeout_s = timeout_s
        self.last_seen = last_seen

    @property
    def job(self) -> Job | None:
        """The job as last read, when a job was waited for."""
        return self.last_seen if isinstance(self.last_seen, Job) else None
