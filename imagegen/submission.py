"""Submitting jobs: the one pipeline every way in goes through.

The Python client, the HTTP API (through the client), the console, the CLI, the plain Redis
intake and raw jobs at the worker's gate all create jobs here, so each gets the same checks in
the same order: validate every job, give jobs without a webhook their tenant's default one, vet
each distinct webhook URL, assign the ids, bind the input images (``imagegen.binding``), check
the deadlines against the estimated start, then store and enqueue within the caps on open jobs,
in one transaction.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import RedisError

from imagegen.binding import InputBinder
from imagegen.contract import JobSpec, ModelRequest, Priority
from imagegen.errors import (
    FieldError,
    IdempotencyConflictError,
    InvalidRequestError,
    JobConflictError,
    QueueFullError,
)
from imagegen.ids import new_job_id, scoped_job_id
from imagegen.records import JobRecord, NewJob
from imagegen.redis import codecs
from imagegen.settings import Settings
from imagegen.ssrf import WebhookUrlError, vet_configured
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_index import FiledJob, JobIndex
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import Caps, CreateOutcome, JobStore
from imagegen.store.tenants import Tenants
from imagegen.submit_trace import traced_submission

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["JobLike", "RequestLike", "Submitted", "Submitter"]

RequestLike = ModelRequest | Mapping[str, Any] | str
# One job as a submitter takes it: a prompt, a request, or a whole job (a JobSpec, or a mapping
# with a "request" key and the envelope fields beside it).
JobLike = JobSpec | RequestLike
log = logging.getLogger("imagegen.submission")

# The settings that hold the caps on open jobs, by the scope the submit script names.
_CAP_SETTINGS = {"total": "IMAGEGEN_MAX_QUEUED_TOTAL", "tenant": "IMAGEGEN_MAX_QUEUED_PER_TENANT"}


class Submitted(NamedTuple):
    record: JobRecord
    created: bool


class Submitter:
    """Validates, binds and stores submissions; one per Redis client."""

    def __init__(
        self,
        settings: Settings,
        *,
        jobs: JobStore,
        reads: JobReads,
        dispatch: Dispatch,
        tenants: Tenants,
        inputs: InputBinder,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.reads = reads
        self.dispatch = dispatch
        self.tenants = tenants
        self.inputs = inputs
        self.index = JobIndex(jobs.redis, settings.job_retention_s)

    @classmethod
    def build(
        cls, settings: Settings, jobs: JobStore, dispatch: Dispatch, s3: Callable[[], S3Client]
    ) -> Submitter:
        """A submitter on the job store's Redis client; ``s3`` is called when an input image
        must be read."""
        reads = JobReads(jobs.redis)
        return cls(
            settings,
            jobs=jobs,
            reads=reads,
            dispatch=dispatch,
            tenants=Tenants(jobs.redis),
            inputs=InputBinder(settings, reads, s3),
        )

    # -- validating --------------------------------------------------------------------------

    def parse(self, data: Any) -> JobSpec:
        """One whole job (the body of ``POST /v1/jobs``); ``InvalidRequestError`` names every
        bad field."""
        return JobSpec.parse(data, **self.settings.contract_context())

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
        """Validate one job given as a request and its envelope's fields."""
        if isinstance(request, str):
            request = {"prompt": request, **request_fields}
        elif request_fields:
            msg = "pass request fields either in the request or as keywords, not both"
            raise TypeError(msg)
        body = (
            request.model_dump(exclude_none=True)
            if isinstance(request, ModelRequest)
            else dict(request)
        )
        envelope = {
            "job_id": job_id,
            "model_id": model_id,
            "metadata": dict(metadata) if metadata is not None else None,
            "priority": priority,
            "webhook_url": webhook_url,
            "webhook_events": list(webhook_events) if webhook_events is not None else None,
            "expires_at": expires_at,
        }
        data = {"request": body, **{k: v for k, v in envelope.items() if v is not None}}
        return self.parse(data)

    def spec_of(self, item: JobLike) -> JobSpec:
        if isinstance(item, JobSpec):
            return item
        if isinstance(item, Mapping) and "request" in item:
            return self.parse(dict(item))
        return self.spec(item)

    def specs(self, items: list[JobLike]) -> list[JobSpec]:
        """Every job validated; the errors of all bad jobs at once, each field under its job's
        index when there are several."""
        specs, errors = [], []
        for index, item in enumerate(items):
            try:
                specs.append(self.spec_of(item))
            except InvalidRequestError as e:
                errors += [
                    FieldError(_job_field(index, len(items), error.field), error.message)
                    for error in e.errors
                ]
        if errors:
            raise InvalidRequestError(errors)
        return specs

    # -- creating ----------------------------------------------------------------------------

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
        """The one way jobs are created: validate all, vet each distinct webhook URL once, check
        the input images, then check the queue caps, store and enqueue in one transaction (with
        ``batch_id``, the batch record too; with ``chain``, the jobs are the steps of chain
        ``batch_id``). Each result says whether the job is new.

        Raises ``InvalidRequestError`` naming every bad field (nothing is stored),
        ``QueueFullError`` when the caps have no room, ``JobConflictError`` when a job id is
        taken by another job and ``IdempotencyConflictError`` when the key was used for
        another request."""
        parsed = self._with_default_webhook(self.specs(list(specs)), tenant)
        self.vet_webhooks(parsed)
        if idempotency_key is not None and len(parsed) != 1:
            msg = "an idempotency key covers exactly one job"
            raise ValueError(msg)
        now_ms = int(time.time() * 1000)
        ids = job_ids or self.new_job_ids(parsed, tenant, now_ms)
        bound = self.inputs.bind(parsed, tenant, ids)
        jobs = [
            NewJob(
                job_id=job_id,
                model_id=spec.model_id or self.settings.model_id,
                spec=inputs.spec,
                created_ms=now_ms,
                tenant=tenant,
                batch_id=batch_id,
                idempotency_key=idempotency_key,
                inputs_digest=inputs.digest,
                after_job_id=inputs.after_job_id,
                chain_id=batch_id if chain else None,
                chain_last=chain and index == len(parsed) - 1,
            )
            for index, (job_id, spec, inputs) in enumerate(zip(ids, parsed, bound, strict=True))
        ]
        self.check_residency(jobs, tenant)
        self.check_deadlines(jobs)
        caps = Caps(self.settings.max_queued_total, self.settings.max_queued_per_tenant)
        with traced_submission(jobs, self.dispatch) as submission:
            jobs = submission.jobs
            outcomes = self.jobs.create(jobs, caps=caps, dispatch=self.dispatch)
            submission.stored(outcomes)
        if outcomes and outcomes[0][0] is CreateOutcome.FULL:
            raise self._queue_full(outcomes[0][1], tenant, len(jobs))
        results = []
        filed = []
        for job, (outcome, detail) in zip(jobs, outcomes, strict=True):
            if outcome is CreateOutcome.CREATED:
                served = detail.startswith("cached ")
                record = (
                    codecs.served_record(job, json.loads(detail.removeprefix("cached ")))
                    if served
                    else job.queued_record()
                )
                results.append(Submitted(record, created=True))
                if job.tenant is not None:
                    filed.append(_filed(job, record.status.value if served else None))
            elif outcome is CreateOutcome.EXISTS:
                results.append(Submitted(self._existing(job), created=False))
            else:
                request_sha256, first_job_id = detail.split(" ", 1)
                if request_sha256 != job.request_sha256:
                    raise IdempotencyConflictError(str(idempotency_key), first_job_id)
                results.append(Submitted(self.reads.get(first_job_id), created=False))
        self._index(filed)
        return results

    def _index(self, filed: list[FiledJob]) -> None:
        """File the new jobs in their tenants' search indexes. The jobs exist whatever happens
        here: a Redis error is logged, and those jobs are only missing from searches."""
        try:
            self.index.file_new(filed)
        except RedisError as e:
            log.warning("new jobs not indexed", extra={"jobs": len(filed), "error": str(e)})

    def new_job_ids(self, specs: list[JobSpec], tenant: str | None, now_ms: int) -> list[str]:
        """The ids the jobs will be stored under: the caller's (in the tenant's namespace) or
        new ULIDs."""
        return [_stored_job_id(spec.job_id, tenant) or new_job_id(now_ms) for spec in specs]

    def vet_webhooks(self, specs: list[JobSpec]) -> None:
        """Resolve and check each distinct webhook URL once; name every job that uses a
        refused one."""
        settings = self.settings
        refused: dict[str, str] = {}
        for url in {spec.webhook_url for spec in specs if spec.webhook_url}:
            try:
                vet_configured(url, settings)
            except WebhookUrlError as e:
                refused[url] = str(e)
        if not refused:
            return
        raise InvalidRequestError(
            [
                FieldError(_job_field(index, len(specs), "webhook_url"), refused[spec.webhook_url])
                for index, spec in enumerate(specs)
                if spec.webhook_url in refused
            ]
        )

    def check_residency(self, jobs: list[NewJob], tenant: str | None) -> None:
        """Refuse the jobs no pool the tenant may use serves, naming for each the pools it may
        use and those that serve its model."""
        allowed = self.tenants.pools(tenant) if tenant else ()
        if not allowed:
            return
        errors = []
        for index, job in enumerate(jobs):
            serving = [p.name for p in self.settings.pools_for(job.model_id)]
            if not set(serving) & set(allowed):
                message = (
                    f"tenant {tenant!r} may use pools {', '.join(allowed)}; model "
                    f"{job.model_id} is served only by {', '.join(serving)}"
                )
                errors.append(FieldError(_job_field(index, len(jobs), "model_id"), message))
        if errors:
            raise InvalidRequestError(errors)

    def check_deadlines(self, jobs: list[NewJob]) -> None:
        """Refuse the jobs whose deadline falls before their estimated start, naming each with
        its estimate. A job's estimate counts only what runs before it: its tenant's jobs with
        earlier deadlines (waiting or in this submission), at the share of the model's rate its
        tenant gets and its own caps allow."""
        if all(job.expires_ms is None for job in jobs):
            return
        groups: dict[tuple[str, str | None, str], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[(job.model_id, job.tenant, job.spec.priority)].append(index)
        now_ms = time.time() * 1000
        errors = []
        for (model_id, tenant, priority), indexes in groups.items():
            if all(jobs[i].expires_ms is None for i in indexes):
                continue
            order = sorted(indexes, key=lambda i: _deadline_order(jobs[i], i))
            ahead = {index: rank for rank, index in enumerate(order)}
            found = self.dispatch.estimates(
                model_id, tenant, priority, [(jobs[i].expires_ms, ahead[i]) for i in indexes]
            )
            for index, estimate in zip(indexes, found, strict=True):
                expires_ms = jobs[index].expires_ms
                if expires_ms is None or estimate.start_in_s is None:
                    continue
                start_s = estimate.start_in_s
                if now_ms + start_s * 1000 > expires_ms:
                    start = datetime.now(UTC) + timedelta(seconds=start_s)
                    message = (
                        "cannot be met: the job would start at about "
                        f"{start.isoformat(timespec='seconds')} ({start_s:.0f} s from now)"
                    )
                    errors.append(FieldError(_job_field(index, len(jobs), "expires_at"), message))
        if errors:
            raise InvalidRequestError(errors)

    # -- internals ---------------------------------------------------------------------------

    def _with_default_webhook(self, specs: list[JobSpec], tenant: str | None) -> list[JobSpec]:
        if all(spec.webhook_url for spec in specs):
            return specs
        url = (self.tenants.webhook_url(tenant) if tenant else None) or (
            self.settings.webhook_default_url
        )
        if not url:
            return specs
        # The default URL is checked once, by vet_webhooks, like any other.
        return [
            spec if spec.webhook_url else spec.model_copy(update={"webhook_url": url})
            for spec in specs
        ]

    def _queue_full(self, detail: str, tenant: str | None, adding: int) -> QueueFullError:
        """The refusal of a submission the caps on open jobs had no room for, with a Retry-After
        estimated from the model's quota."""
        scope, waiting, cap = detail.split(" ")
        rate_per_s = max(self.settings.limit_for(self.settings.model_id).rpm / 60, 1.0)
        retry_after_s = max(1, math.ceil((int(waiting) + adding - int(cap)) / rate_per_s))
        name = "the service" if scope == "total" else f"tenant {tenant}"
        return QueueFullError(
            name, int(waiting), int(cap), retry_after_s, setting=_CAP_SETTINGS.get(scope, "")
        )

    def _existing(self, job: NewJob) -> JobRecord:
        record = self.reads.get(job.job_id)
        same = (
            record.request == job.spec.request
            and record.model_id == job.model_id
            and record.metadata == job.spec.metadata
        )
        if not same:
            raise JobConflictError(job.job_id)
        return record


def _stored_job_id(job_id: str | None, tenant: str | None) -> str | None:
    """A tenant's own ids live in its namespace; ours (ULIDs) are unique anyway."""
    return scoped_job_id(tenant, job_id) if job_id and tenant else job_id


def _job_field(index: int, jobs: int, field: str) -> str:
    """A field's name in an error: ``{index}.{field}`` when several jobs were submitted."""
    return f"{index}.{field}" if jobs > 1 else field


def _deadline_order(job: NewJob, index: int) -> tuple[float, int]:
    """Where a job of a submission goes among its tenant's jobs: earliest deadline first, then
    the order submitted (a job without a deadline after every deadline)."""
    return (float("inf") if job.expires_ms is None else job.expires_ms, index)


def _filed(job: NewJob, final_status: str | None) -> FiledJob:
    return FiledJob(
        job_id=job.job_id,
        tenant=job.tenant or "",
        model_id=job.model_id,
        created_ms=job.created_ms,
        prompt=job.spec.request.prompt_text,
        final_status=final_status,
    )
