"""The Python client a backend uses to submit jobs and read their results."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from imagegen.store.cache import ImageCache
from imagegen.store.deliveries import Deliveries, SigningSecrets
from imagegen.store.dispatch import Dispatch, TenantLimits, TenantShare
from imagegen.store.job_reads import JobPage, JobReads
from imagegen.store.jobs import CancelOutcome, JobStore
from imagegen.store.quarantine import Quarantine
from imagegen.store.quota import QuotaStatus, QuotaStore
from imagegen.store.spend import Budget, Ledger, PeriodSpend, SpendRow, periods
from imagegen.store.stats import Stats
from imagegen.store.tenants import TENANT_PATTERN, ApiKeys, Tenants, is_tenant_name
from imagegen.submission import JobLike, RequestLike, Submitted, Submitter
from producer.chains import ChainStatus, bind_steps, chain_status

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["BatchStatus", "Client", "Submitted"]

DEFAULT_WAIT_S = 300.0


class Client:
    """Submit Stable Image Core jobs and follow them.

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
        self.ledger = Ledger(self._redis, self.settings)
        self.cache = ImageCache(self._redis)
        self.webhook_deliveries = Deliveries(self._redis)
        self.signing_secrets = SigningSecrets(self._redis, self.settings.webhook_secret_overlap_s)
        self.api_keys = ApiKeys(self._redis)
        self.tenants = Tenants(self._redis)
        self.quota_store = QuotaStore(self._redis, self.settings)
        self.quarantine = Quarantine(self._redis)
        self.stats = Stats(self._redis)
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

    def tenant_webhook(self, tenant: str) -> str | None:
        return self.tenants.webhook_url(tenant)

    def set_tenant_webhook(self, tenant: str, url: str | None) -> None:
        """A tenant's default webhook endpoint (None removes it); vetted like a job's."""
        if url is not None:
            probe = self.submitter.parse({"request": {"prompt": "-"}, "webhook_url": url})
            self.submitter.vet_webhooks([probe])
        self.tenants.set_webhook_url(tenant, url)

    def signing_secrets_for(self, tenant: str | None) -> SigningSecrets:
        """The secrets that sign a tenant's webhooks (None: jobs without a tenant)."""
        if tenant is None:
            return self.signing_secrets
        return SigningSecrets(self._redis, self.settings.webhook_secret_overlap_s, tenant)

    def replay(self, job_ids: Iterable[str]) -> list[str]:
        """Queue failed jobs from the dead-letter set again; returns those replayed."""
        return self.jobs.replay(job_ids)

    def dead_letters(self, limit: int = 1000) -> list[JobRecord]:
        """Failed jobs, oldest failure first."""
        return self.jobs.dead_letters(limit)

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

    def quota(self, model_ids: Iterable[str] | None = None) -> list[QuotaStatus]:
        """The shared Bedrock quota of each model (default: every allowed model)."""
        return [
            self.quota_store.status(model_id)
            for model_id in (model_ids or self.settings.allowed_model_ids)
        ]

    def tenant_shares(
        self,
        model_ids: Iterable[str] | None = None,
        *,
        tenant: str | None = None,
        busiest: int | None = None,
    ) -> list[TenantShare]:
        """Each tenant's share of each model's rate over the last minute, against its fair
        share (default: every allowed model, and any other with jobs waiting); only
        ``tenant``'s, or the ``busiest`` tenants', when given."""
        models = list(model_ids or self.dispatch.known_models())
        if tenant is not None:
            return self.dispatch.tenant_shares(tenant, models)
        return [
            share
            for model_id in models
            for share in self.dispatch.shares(model_id, busiest=busiest)
        ]

    def tenant_limits(self, tenant: str) -> TenantLimits:
        """A tenant's weight in the fair share and its caps, as the dispatcher applies them."""
        return self.dispatch.tenant_limits(tenant)

    def set_tenant_limits(
        self,
        tenant: str,
        *,
        weight: float | None = None,
        rate_rpm: float | None = None,
        max_concurrency: int | None = None,
    ) -> TenantLimits:
        """Set a tenant's weight or caps (None: unchanged; negative: back to the default)."""
        _check_tenant_name(tenant)
        return self.dispatch.set_tenant_limits(
            tenant, weight=weight, rate_rpm=rate_rpm, max_concurrency=max_concurrency
        )

    def budget(self, tenant: str) -> Budget:
        """The tenant's budgets (dollars per UTC day and month) and what happens past them."""
        return self.ledger.budget(tenant)

    def set_budget(self, budget: Budget) -> Budget:
        """Replace a tenant's budgets; effective for the next job released."""
        _check_tenant_name(budget.tenant)
        return self.ledger.set_budget(budget)

    def spend_now(self, tenant: str | None) -> tuple[PeriodSpend, PeriodSpend]:
        """The tenant's spend and reservations today and this month (UTC)."""
        day, month = periods()
        return self.ledger.period(tenant, day), self.ledger.period(tenant, month)

    def spend(self, tenant: str | None = None, days: int = 31) -> list[SpendRow]:
        """Images and spend per tenant, model and day (every tenant when None), newest first."""
        tenants = [tenant] if tenant else self.ledger.tenants()
        return [row for name in tenants for row in self.ledger.rows(name, days)]

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


def _check_tenant_name(tenant: str) -> None:
    if not is_tenant_name(tenant):
        raise InvalidRequestError([FieldError("tenant", f"must match {TENANT_PATTERN}")])
