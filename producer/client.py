"""The Python client a backend uses to submit jobs and read their results."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from producer.contract import GenerationRequest, JobSpec, Priority
from producer.dlq import DeadLetters
from producer.errors import ImagegenError, JobConflictError
from producer.ids import new_job_id
from producer.jobs import JobRecord, JobStatus, ms_to_datetime
from producer.outbox import Deliveries, SigningSecrets
from producer.quota import QuotaStatus, read_quota
from producer.s3 import make_s3_client
from producer.settings import Settings, get_settings
from producer.store import JobStore, NewJob

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["Client"]

DEFAULT_WAIT_S = 300.0
RequestLike = GenerationRequest | Mapping[str, Any] | str


class Client:
    """Submit Stable Image Core jobs and follow them.

    >>> client = Client()
    >>> job = client.submit("a lighthouse at dawn", aspect_ratio="16:9")
    >>> done = client.wait(job.job_id)
    >>> done.status, done.s3_uri, done.seed
    """

    def __init__(self, settings: Settings | None = None, *, redis_client: Any = None) -> None:
        self.settings = settings or get_settings()
        self._redis = redis_client or redis.Redis.from_url(
            self.settings.redis_url, decode_responses=True
        )
        self._store = JobStore(self._redis, self.settings.job_retention_s)
        self.dead_letters = DeadLetters(self._redis, self.settings.job_retention_s)
        self.webhook_deliveries = Deliveries(self._redis)
        self.signing_secrets = SigningSecrets(self._redis, self.settings.webhook_secret_overlap_s)
        self._s3: S3Client | None = None

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- submitting -------------------------------------------------------------------------

    def spec(
        self,
        request: RequestLike,
        *,
        job_id: str | None = None,
        model_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: Priority = "interactive",
        webhook_url: str | None = None,
        webhook_events: Iterable[str] | None = None,
        **request_fields: Any,
    ) -> JobSpec:
        """Validate one job; raises ``InvalidRequestError`` naming every bad field."""
        if isinstance(request, str):
            request = {"prompt": request, **request_fields}
        elif request_fields:
            msg = "pass request fields either in the request or as keywords, not both"
            raise TypeError(msg)
        body = request.model_dump() if isinstance(request, GenerationRequest) else dict(request)
        data: dict[str, Any] = {"request": body, "priority": priority}
        if job_id is not None:
            data["job_id"] = job_id
        if model_id is not None:
            data["model_id"] = model_id
        if metadata is not None:
            data["metadata"] = dict(metadata)
        if webhook_url is not None:
            data["webhook_url"] = webhook_url
        if webhook_events is not None:
            data["webhook_events"] = list(webhook_events)
        return self._parse(data)

    def submit(self, request: RequestLike, **options: Any) -> JobRecord:
        """Validate, store and enqueue one job. Resubmitting a job id returns the stored job."""
        return self.submit_many([self.spec(request, **options)])[0]

    def submit_many(self, specs: Iterable[JobSpec | Mapping[str, Any]]) -> list[JobRecord]:
        """Validate every job first (nothing is queued if one is bad), then store and enqueue
        them all in one pipelined round trip."""
        now_ms = int(time.time() * 1000)
        jobs = []
        for item in specs:
            spec = item if isinstance(item, JobSpec) else self._parse(dict(item))
            jobs.append(
                NewJob(
                    job_id=spec.job_id or new_job_id(now_ms),
                    model_id=spec.model_id or self.settings.model_id,
                    spec=spec,
                    created_ms=now_ms,
                )
            )
        created = self._store.create(jobs)
        return [
            _queued_record(job) if was_created else self._existing(job)
            for job, was_created in zip(jobs, created, strict=True)
        ]

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """The job's record; raises ``JobNotFoundError``."""
        return self._store.get(job_id)

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        return self._store.get_many(job_ids)

    def wait(self, job_id: str, timeout_s: float = DEFAULT_WAIT_S) -> JobRecord:
        """Block until the job is final; raises ``JobTimeoutError`` after ``timeout_s``."""
        return self._store.wait(job_id, timeout_s)

    def quota(self, model_ids: Iterable[str] | None = None) -> list[QuotaStatus]:
        """The shared Bedrock quota of each model (default: every allowed model)."""
        return [
            read_quota(self._redis, self.settings, model_id)
            for model_id in (model_ids or self.settings.allowed_model_ids)
        ]

    def download(self, record: JobRecord, path: str | Path) -> Path:
        """Save a succeeded job's image to ``path``."""
        if record.status is not JobStatus.SUCCEEDED or not (record.s3_bucket and record.s3_key):
            msg = f"job {record.job_id} is {record.status.value}: it has no image"
            raise ImagegenError(msg)
        if self._s3 is None:
            self._s3 = make_s3_client(self.settings)
        target = Path(path)
        self._s3.download_file(record.s3_bucket, record.s3_key, str(target))
        return target

    # -- internals ---------------------------------------------------------------------------

    def _parse(self, data: Any) -> JobSpec:
        settings = self.settings
        if settings.webhook_default_url and isinstance(data, dict) and not data.get("webhook_url"):
            data = {**data, "webhook_url": settings.webhook_default_url}
        return JobSpec.parse(
            data,
            allowed_model_ids=settings.allowed_model_ids,
            metadata_max_bytes=settings.metadata_max_bytes,
            webhook_allow_http=settings.webhook_allow_http,
            webhook_allowed_hosts=settings.webhook_allowed_hosts,
        )

    def _existing(self, job: NewJob) -> JobRecord:
        record = self._store.get(job.job_id)
        same = (
            record.request == job.spec.request
            and record.model_id == job.model_id
            and record.metadata == job.spec.metadata
        )
        if not same:
            raise JobConflictError(job.job_id)
        return record


def _queued_record(job: NewJob) -> JobRecord:
    return JobRecord(
        job_id=job.job_id,
        status=JobStatus.QUEUED,
        model_id=job.model_id,
        priority=job.spec.priority,
        request=job.spec.request,
        metadata=job.spec.metadata,
        created_at=ms_to_datetime(job.created_ms),
        webhook_url=job.spec.webhook_url,
        webhook_events=list(job.spec.events) if job.spec.webhook_url else [],
    )
