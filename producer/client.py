"""The Redis-level client a trusted backend uses to submit jobs and read their results.

It needs Redis (and S3 for ``download``). A backend with nothing but an API key uses the HTTP
API's client, ``imagegen_client``; operators use ``producer.operator.OperatorClient``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, overload

from pydantic import BaseModel

from imagegen.binding import InputBinder
from imagegen.contract import JobSpec, Priority
from imagegen.errors import FieldError, ImagegenError, InvalidRequestError, JobNotFoundError
from imagegen.ids import new_job_id
from imagegen.models import model_for
from imagegen.records import JobRecord, JobStatus, ms_to_datetime
from imagegen.redis.connection import connect
from imagegen.s3 import make_s3_client
from imagegen.settings import Settings, get_settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobPage, JobReads
from imagegen.store.jobs import CancelOutcome, JobStore
from imagegen.store.tenants import Tenants
from imagegen.submission import JobLike, RequestLike, Submitted, Submitter
from producer.chains import ChainStatus, bind_steps, chain_status
from producer.operator import OperatorClient

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["BatchStatus", "Client", "Submitted"]

DEFAULT_WAIT_S = 300.0

T = TypeVar("T")


class _Moved(Generic[T]):
    """A name that moved to ``OperatorClient``, answered through ``Client.operator``."""

    def __init__(self, get: Callable[[OperatorClient], T]) -> None:
        self._get = get

    @overload
    def __get__(self, client: None, owner: type[Client]) -> Self: ...

    @overload
    def __get__(self, client: Client, owner: type[Client]) -> T: ...

    def __get__(self, client: Client | None, owner: type[Client]) -> Self | T:
        return self if client is None else self._get(client.operator)


class Client:
    """Submit jobs and follow them, straight through Redis.

    >>> client = Client()
    >>> job = client.submit("a lighthouse at dawn", aspect_ratio="16:9")
    >>> done = client.wait(job.job_id)
    >>> done.status, done.s3_uri, done.seed
    """

    def __init__(self, settings: Settings | None = None, *, redis_client: Any = None) -> None:
        self.settings = settings or get_settings()
        self._redis = redis_client or connect(self.settings)
        self.jobs = JobStore(
            self._redis, self.settings.job_retention_s, self.settings.webhook_handoff_grace_s
        )
        self.reads = JobReads(self._redis)
        self.dispatch = Dispatch(self._redis, self.settings)
        self.tenants = Tenants(self._redis)
        self._s3: S3Client | None = None
        self.inputs = InputBinder(self.settings, self.reads, self.s3)
        self.submitter = Submitter(
            self.settings,
            jobs=self.jobs,
            reads=self.reads,
            dispatch=self.dispatch,
            tenants=self.tenants,
            inputs=self.inputs,
        )

    def close(self) -> None:
        self._redis.close()

    @cached_property
    def operator(self) -> OperatorClient:
        """The operator's client on this client's connection (budgets, keys, replays...)."""
        return OperatorClient(self.settings, redis_client=self._redis)

    # Operator actions live in ``OperatorClient``; these names still answer, through
    # ``operator``, for callers written before the split.
    api_keys = _Moved(lambda operator: operator.api_keys)
    cache = _Moved(lambda operator: operator.cache)
    quarantine = _Moved(lambda operator: operator.quarantine)
    signing_secrets = _Moved(lambda operator: operator.signing_secrets)
    stats = _Moved(lambda operator: operator.stats)
    webhook_deliveries = _Moved(lambda operator: operator.webhook_deliveries)
    budget = _Moved(lambda operator: operator.budget)
    dead_letters = _Moved(lambda operator: operator.dead_letters)
    quota = _Moved(lambda operator: operator.quota)
    replay = _Moved(lambda operator: operator.replay)
    set_budget = _Moved(lambda operator: operator.set_budget)
    set_tenant_limits = _Moved(lambda operator: operator.set_tenant_limits)
    set_tenant_webhook = _Moved(lambda operator: operator.set_tenant_webhook)
    signing_secrets_for = _Moved(lambda operator: operator.signing_secrets_for)
    spend = _Moved(lambda operator: operator.spend)
    spend_now = _Moved(lambda operator: operator.spend_now)
    tenant_limits = _Moved(lambda operator: operator.tenant_limits)
    tenant_shares = _Moved(lambda operator: operator.tenant_shares)
    tenant_webhook = _Moved(lambda operator: operator.tenant_webhook)

    def s3(self) -> S3Client:
        """The S3 client (made on first use: most callers never need it)."""
        if self._s3 is None:
            self._s3 = make_s3_client(self.settings)
        return self._s3

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
        priority: Priority | None = None,
        webhook_url: str | None = None,
        webhook_events: Iterable[str] | None = None,
        expires_at: datetime | None = None,
        **request_fields: Any,
    ) -> JobSpec:
        """Validate one job; raises ``InvalidRequestError`` naming every bad field."""
        return self.submitter.spec(
            request,
            job_id=job_id,
            model_id=model_id,
            metadata=metadata,
            priority=priority,
            webhook_url=webhook_url,
            webhook_events=webhook_events,
            expires_at=expires_at,
            **request_fields,
        )

    def submit(
        self,
        request: JobLike,
        *,
        tenant: str | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> JobRecord:
        """Validate, store and enqueue one job: a prompt, a request (with the envelope as
        keywords), or a whole job as ``submit_many`` takes it.

        Resubmitting a job id, or an ``idempotency_key`` with the same request within 24 h,
        returns the stored job instead of a new one."""
        whole_job = isinstance(request, Mapping) and "request" in request
        if options and whole_job:
            msg = "a whole job (with a request key) takes no further keywords"
            raise TypeError(msg)
        spec = (
            self.spec(request, **options)
            if options and not isinstance(request, JobSpec)
            else self.submitter.spec_of(request)
        )
        [submitted] = self.create_jobs([spec], tenant=tenant, idempotency_key=idempotency_key)
        return submitted.record

    def submit_many(
        self, specs: Iterable[JobLike], *, tenant: str | None = None
    ) -> list[JobRecord]:
        """Validate every job first (nothing is queued if one is bad), then store and enqueue
        them all in one pipelined round trip."""
        return [s.record for s in self.create_jobs(specs, tenant=tenant)]

    def submit_batch(
        self, specs: Iterable[JobLike], *, tenant: str | None = None
    ) -> tuple[str, list[JobRecord]]:
        """Submit jobs as one batch (priority ``batch`` unless a job says otherwise); returns
        the batch id and the jobs."""
        items = list(specs)
        if not items:
            raise InvalidRequestError([FieldError("body", "a batch needs at least one job")])
        if len(items) > self.settings.max_batch_size:
            msg = f"a batch holds at most {self.settings.max_batch_size} jobs, not {len(items)}"
            raise InvalidRequestError([FieldError("body", msg)])
        parsed = [
            spec
            if "priority" in spec.model_fields_set
            else spec.model_copy(update={"priority": "batch"})
            for spec in self.submitter.specs(items)
        ]
        batch_id = new_job_id()
        submitted = self.create_jobs(parsed, tenant=tenant, batch_id=batch_id)
        return batch_id, [s.record for s in submitted]

    def create_jobs(
        self,
        specs: Iterable[JobLike],
        *,
        tenant: str | None = None,
        batch_id: str | None = None,
        idempotency_key: str | None = None,
        chain: bool = False,
        job_ids: list[str] | None = None,
    ) -> list[Submitted]:
        """The one way jobs are created (``imagegen.submission``): validated, inputs bound,
        deadlines and caps checked, stored and enqueued in one transaction. Each result says
        whether the job is new."""
        return self.submitter.create_jobs(
            specs,
            tenant=tenant,
            batch_id=batch_id,
            idempotency_key=idempotency_key,
            chain=chain,
            job_ids=job_ids,
        )

    def submit_chain(
        self, steps: Iterable[JobLike], *, tenant: str | None = None
    ) -> tuple[str, list[JobRecord]]:
        """Submit jobs that each may take an earlier one's output (``{"step": n}`` as an input
        image) as one chain; returns the chain id and its steps' jobs."""
        specs = self.submitter.specs(list(steps))
        now_ms = int(time.time() * 1000)
        ids = self.submitter.new_job_ids(specs, tenant, now_ms)
        bound = bind_steps(specs, ids)
        chain_id = new_job_id(now_ms)
        submitted = self.create_jobs(
            bound, tenant=tenant, batch_id=chain_id, chain=True, job_ids=ids
        )
        return chain_id, [s.record for s in submitted]

    def models(self) -> list[dict[str, Any]]:
        """The models a job may name: the registry's entry (fields, input images, output) with
        the price this deployment charges."""
        found = []
        for model_id in self.settings.allowed_model_ids:
            model = model_for(model_id)
            entry = model.describe() if model else {"model_id": model_id, "kind": "generate"}
            found.append({**entry, "price_usd": self.settings.price_usd(model_id)})
        return found

    def chain(self, chain_id: str) -> ChainStatus:
        """Where a chain stands, with each of its steps."""
        found = self.reads.batch(chain_id)
        steps = [step for step in self.reads.get_many(found.job_ids) if step] if found else []
        if found is None or not steps or steps[0].chain_id != chain_id:
            raise JobNotFoundError(chain_id)
        return chain_status(chain_id, found.tenant, ms_to_datetime(found.created_ms), steps)

    def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job: one nobody holds (waiting, or waiting for a retry) ends ``canceled``
        now; a running one stops before its Bedrock call or its upload. ``TERMINAL`` when it
        had already ended."""
        outcome = self.jobs.cancel(job_id)
        if outcome is CancelOutcome.MISSING:
            raise JobNotFoundError(job_id)
        return outcome

    # -- reading -----------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord:
        """The job's record; while it waits, with its queue position and start estimate."""
        return self.with_position(self.reads.get(job_id))

    def with_position(self, record: JobRecord) -> JobRecord:
        """The record with where it stands in the dispatcher, when it is waiting (``paused``
        with the reason while its tenant's queue is paused)."""
        if record.status is not JobStatus.QUEUED:
            return record
        found = self.dispatch.position(record.job_id, record.model_id)
        if found is None:
            return record
        start = None
        if found.start_in_s is not None:
            start = datetime.now(UTC) + timedelta(seconds=found.start_in_s)
        paused = {"place": "paused", "paused_reason": found.paused_reason}
        return record.model_copy(
            update={
                "queue_position": found.position,
                "estimated_start_at": start,
                "tenant_share": round(found.share, 4),
                **(paused if found.paused_reason else {}),
            }
        )

    def get_many(self, job_ids: Iterable[str]) -> list[JobRecord | None]:
        return self.reads.get_many(job_ids)

    def list_jobs(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        batch_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """A page of jobs, newest first: a tenant's (or, without one, everybody's)."""
        return self.reads.page(
            tenant=tenant, status=status, batch_id=batch_id, cursor=cursor, limit=limit
        )

    def batch(self, batch_id: str) -> BatchStatus:
        """How far a batch got: counts by status and its job ids."""
        found = self.reads.batch(batch_id)
        if found is None:
            raise JobNotFoundError(batch_id)
        counts = Counter(status or "expired" for status in self.reads.statuses(found.job_ids))
        return BatchStatus(
            batch_id=batch_id,
            tenant=found.tenant,
            created_at=ms_to_datetime(found.created_ms),
            size=len(found.job_ids),
            counts=dict(sorted(counts.items())),
            job_ids=found.job_ids,
        )

    def wait(self, job_id: str, timeout_s: float = DEFAULT_WAIT_S) -> JobRecord:
        """Block until the job is final; raises ``JobTimeoutError`` after ``timeout_s``."""
        return self.reads.wait(job_id, timeout_s)

    def download(self, record: JobRecord, path: str | Path) -> Path:
        """Save a succeeded job's image to ``path``."""
        if record.status is not JobStatus.SUCCEEDED or not (record.s3_bucket and record.s3_key):
            msg = f"job {record.job_id} is {record.status.value}: it has no image"
            raise ImagegenError(msg)
        target = Path(path)
        self.s3().download_file(record.s3_bucket, record.s3_key, str(target))
        return target


class BatchStatus(BaseModel):
    """A batch as the API reports it."""

    batch_id: str
    tenant: str | None
    created_at: datetime
    size: int
    counts: dict[str, int]
    job_ids: list[str]
