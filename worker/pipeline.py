"""One attempt at one job, as plain functions: claim, call Bedrock, check, upload, record.

The Celery task (``worker.tasks``) only does messaging around ``run_job``; everything here can be
run and tested without a broker.

Nothing is bought twice when it can be avoided: a re-run first looks for the image an earlier
attempt already uploaded (deterministic key), then for one it bought but could not upload
(parked in Redis), and only then calls Bedrock. After Redis lost data, a first attempt looks for
the image of the same job's lost record (``worker.lost_images``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from opentelemetry.trace import Span

from imagegen import tracing
from imagegen.contract import ModelRequest
from imagegen.errors import BedrockCallError, JobError
from imagegen.image_facts import JobFacts
from imagegen.logs import prompt_facts
from imagegen.pools import Pool, opens_circuit
from imagegen.records import JobRecord, JobStatus, JobTrace
from imagegen.s3 import s3_uri
from imagegen.settings import Settings
from imagegen.store.deliveries import DeliveryClaim
from imagegen.store.dispatch import Dispatch, Release
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import CallMark, ClaimState, FinishOutcome, JobStore
from imagegen.store.pool_stats import PoolStats
from imagegen.store.spend import Ledger, to_micro
from worker import metrics, spans
from worker.bedrock import BedrockAnswer, Filtered, Generated, interpret, invoke_model
from worker.images import ImageInfo, inspect_image
from worker.inputs import fetch_inputs
from worker.limiter import Limiter
from worker.lost_images import LostImages
from worker.retry import Decision, Disposition, RetryPolicy, disposition_of
from worker.storage import (
    StoredImage,
    copy_image,
    delete_image,
    find_stored_image,
    image_key,
    upload_image,
)
from worker.webhooks import delivery_lease_ms, endpoint_slot_for

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
    from mypy_boto3_s3 import S3Client

    from imagegen.bedrock import PoolClients
    from worker.send_now import SendNow

__all__ = ["RETRY_SCHEDULED", "JobOutcome", "Services", "run_job"]

log = logging.getLogger("imagegen.job")


@dataclass(frozen=True)
class Services:
    """What an attempt needs; one per worker process, shared by its threads."""

    settings: Settings
    store: JobStore
    dispatch: Dispatch
    ledger: Ledger
    reads: JobReads
    bedrock: BedrockRuntimeClient
    s3: S3Client
    policy: RetryPolicy
    limiter: Limiter
    # This process's threads that send a finished job's webhook deliveries at once, built on
    # first use (None: the delivery messages on the webhooks queue do, as from any other
    # process).
    send_now: Callable[[], SendNow] | None = None
    # The configured pools' clients (``bedrock`` is the implicit pool's) and their counters.
    pools: PoolClients | None = None
    pool_stats: PoolStats | None = None
    # Where a first attempt looks for the image of its job's record Redis lost (None: nowhere).
    lost_images: LostImages | None = None

    @classmethod
    def on(
        cls,
        redis_client: redis.Redis,
        settings: Settings,
        *,
        bedrock: BedrockRuntimeClient,
        s3: S3Client,
        **extra: Any,
    ) -> Services:
        """The services whose state is in ``redis_client`` (the job store, dispatcher, ledger,
        reads and limiter), with these Bedrock and S3 clients and any ``extra`` parts."""
        return cls(
            settings=settings,
            store=JobStore.from_settings(redis_client, settings),
            dispatch=Dispatch(redis_client, settings),
            ledger=Ledger(redis_client, settings),
            reads=JobReads(redis_client),
            bedrock=bedrock,
            s3=s3,
            policy=RetryPolicy.from_settings(settings),
            limiter=Limiter(redis_client, settings),
            **extra,
        )


# The outcome of an attempt that failed retryably: the job waits in the dispatcher for its
# retry's due time, then for its turn.
RETRY_SCHEDULED = "retry_scheduled"
# The error code of a job given back to wait for its tenant's budget (no failure counted).
BUDGET_WAIT = "BudgetWait"
# A call that did not start because no Redis replica confirmed its mark, and how soon it is
# tried again (not counted against the job's attempts).
NOT_REPLICATED = "RedisNotReplicated"
NOT_REPLICATED_DELAY_S = 1.0
# The error code of a job whose stored request no longer reads as its model's request.
UNREADABLE_REQUEST = "UnreadableRequest"
# The webhook deliveries a final transition makes at most: the job's event and its chain's.
MOST_DELIVERIES_AT_A_FINISH = 2
# Call errors after which Bedrock may have generated and billed an image nobody read.
BILLED_UNSEEN = frozenset({"ReadTimeout"})
THROTTLED = "ThrottlingException"
# A job a pool throttled goes back for another pool's token without spending an attempt, up to
# this many times per attempt it may make (then throttles count as the policy says).
FREE_RETURNS_PER_ATTEMPT = 4


class _NoBudget:
    """call_bedrock's answer when the call may not start for the tenant's budget."""


_NO_BUDGET = _NoBudget()


class _NotCalled:
    """call_bedrock's answer when the call may not start for Redis: the attempt no longer holds
    the job (``LEASE``), or no replica confirmed its call mark in time (``UNCONFIRMED``)."""

    def __init__(self, mark: CallMark) -> None:
        self.mark = mark


@dataclass(frozen=True)
class JobOutcome:
    """What one run of the task did; its ``summary`` is the task result Flower shows."""

    job_id: str
    status: str
    s3_key: str | None = None
    seed: int | None = None
    # The job's model, when the attempt knew it (its release loop releases that model's next).
    model_id: str | None = None
    # The release sent with the job's finish (the slot it freed), when there was one: then the
    # release loop needs waking only when that release says more can go soon.
    release: Release | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "s3_key": self.s3_key,
            "seed": self.seed,
        }


def run_job(job_id: str, services: Services, owner: str) -> JobOutcome:
    """Run one attempt of ``job_id`` (released to this message by the dispatcher)."""
    started = time.perf_counter()
    lease_ms = round(services.settings.task_time_limit_s * 1000)
    # The claim marks the call of an attempt that calls Bedrock straight after it; not while a
    # first attempt may look in S3 for the image of a record Redis lost.
    calls_at_once = services.lost_images is None or not services.lost_images.recent()
    try:
        claim = services.store.claim(job_id, owner, lease_ms, call=calls_at_once)
    except redis.RedisError:
        # The answer may be lost on the way, the claim and its call mark made: give the mark
        # back (a no-op when this owner holds no lease), so the redrive books no call.
        if calls_at_once:
            _give_back_call_mark(services, job_id, owner)
        raise
    if claim.state is not ClaimState.CLAIMED or claim.record is None:
        log.info(
            "job skipped",
            extra={"job_id": job_id, "reason": claim.state.value, "attempt": claim.attempt},
        )
        return JobOutcome(job_id, claim.state.value)
    record = claim.record
    if record.request is None:
        return _unreadable_request(job_id, claim.attempt, services, owner)
    attempt: _Attempt | None = None
    try:
        attempt = _Attempt(
            record,
            record.request,
            number=claim.attempt,
            owner=owner,
            services=services,
            started=started,
            pool_name=claim.pool,
            idempotency=claim.idempotency,
            call_marked=claim.call_marked,
        )
        trace = claim.trace or JobTrace()
        parent = tracing.context_of(trace.traceparent)
        spans.record_wait(record, claim.attempt, trace, parent, round(time.time() * 1000))
        with spans.processing(record, claim.attempt, parent) as span:
            outcome = _run_attempt(attempt, claim.queue_wait_ms, span)
            span.set_attribute("imagegen.job.outcome", outcome.status)
            return outcome
    except BaseException:
        # The record marks a call this attempt never made: give the mark back, or the redrive
        # would book an image nobody bought when the lease runs out.
        if attempt.call_marked if attempt is not None else claim.call_marked:
            _give_back_call_mark(services, job_id, owner)
        raise


def _unreadable_request(job_id: str, attempt: int, services: Services, owner: str) -> JobOutcome:
    """A released job whose stored request no longer reads as its model's (a request type made
    stricter since it was stored) ends failed, never called, instead of being run again."""
    message = "the stored request no longer reads as the model's request; submit it again"
    services.store.finish(
        job_id,
        owner,
        JobStatus.FAILED,
        {"error_code": UNREADABLE_REQUEST, "error_message": message},
        attempt_log=(attempt, UNREADABLE_REQUEST, message),
    )
    log.warning("job request unreadable", extra={"job_id": job_id, "attempt": attempt})
    return JobOutcome(job_id, JobStatus.FAILED.value)


def _give_back_call_mark(services: Services, job_id: str, owner: str) -> None:
    try:
        services.store.mark_calling(job_id, owner, calling=False)
    except redis.RedisError:
        log.warning("call mark not given back", extra={"job_id": job_id}, exc_info=True)


def _run_attempt(attempt: _Attempt, queue_wait_ms: int | None, span: Span) -> JobOutcome:
    """The claimed attempt, inside its span (which the metrics' exemplars point at)."""
    record, job_id = attempt.record, attempt.job_id
    if queue_wait_ms is not None:
        metrics.QUEUE_WAIT.labels(record.model_id, record.tenant or "-").observe(
            queue_wait_ms / 1000, exemplar=tracing.exemplar()
        )
    log.info(
        "job running",
        extra={
            "job_id": job_id,
            "attempt": attempt.number,
            "queue_wait_ms": queue_wait_ms,
            "model_id": record.model_id,
            "queue": record.priority,
            "tenant": record.tenant,
            **prompt_facts(attempt.request.prompt_text),
        },
    )
    try:
        return attempt.run()
    except JobError as e:
        spans.failed(span, e.code)
        return attempt.fail_or_retry(e)
    except Exception as e:  # a bug or an outage must not strand the job as "running"
        log.exception("job attempt crashed", extra={"job_id": job_id, "attempt": attempt.number})
        spans.failed(span, "InternalError")
        return attempt.fail_or_retry(JobError(f"{type(e).__name__}: {e}", code="InternalError"))


class _Attempt:
    def __init__(
        self,
        record: JobRecord,
        request: ModelRequest,
        *,
        number: int,
        owner: str,
        services: Services,
        started: float,
        pool_name: str | None = None,
        idempotency: tuple[str, str] | None = None,
        call_marked: bool = False,
    ) -> None:
        self.record = record
        # The record marks a Bedrock call this attempt has not started (the claim marked it:
        # nothing to fetch or copy first; or no replica confirmed the attempt's own mark): an
        # attempt that breaks while it holds one gives it back.
        self.call_marked = call_marked
        self.idempotency = idempotency
        self.request = request
        self.number = number
        self.owner = owner
        self.services = services
        self.started = started
        # When this attempt's Bedrock call returned an image not yet uploaded or parked.
        self.bought_at: float | None = None
        # When Bedrock answered this attempt's call, and whether the limiter has heard of it.
        self.answered_at: float | None = None
        self.answer_unreported = False
        # This attempt bought an image (booked at once, or by its final transition).
        self.bought = False
        # This attempt's finish made the job final.
        self.finished = False
        settings = services.settings
        self.bucket = settings.s3_bucket
        self.key = image_key(
            settings.s3_prefix, record.job_id, record.created_at, request.image_format
        )
        # The pool the dispatcher released the job to (the implicit one when none, or gone).
        found = settings.pool_named(pool_name, record.model_id) if pool_name else None
        self.pool: Pool = found or settings.implicit_pool(record.model_id)
        # The answered call's attribution, recorded with the limiter's report (``report_answer``);
        # its line in the job's record is added by the attempt's final transition when that
        # comes first (``answer_noted``).
        self.answer_facts: tuple[str, str | None, int | None, int | None] | None = None
        self.answer_noted = False
        # The pool's counters of that call, and the limiter's report, when they were sent with
        # the finish.
        self.answer_counted = False
        self.limiter_told = False

    @property
    def job_id(self) -> str:
        return self.record.job_id

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)

    def run(self) -> JobOutcome:
        try:
            return self._run()
        finally:
            # Told once the image is kept (or the attempt ended): a stalled Redis must not hold
            # a bought image in memory.
            self.report_answer()

    def _run(self) -> JobOutcome:
        store, s3 = self.services.store, self.services.s3
        latency_ms: int | None = None
        generated: Generated | None = None
        # A cache hit that copies another job's image under our key (only cached jobs can).
        source = store.copy_source(self.job_id) if self.record.cached else None
        if source is not None:
            copied = copy_image(s3, source, self.bucket, self.key, facts=self.job_facts())
            log.info("job image copied from the cache", extra=self.facts())
            return self.succeed(copied.seed, copied.info, latency_ms=None)
        earlier = self.stored_earlier()
        if earlier is not None:
            self.key, stored = earlier
            log.info("job image found in S3", extra=self.facts())
            return self.succeed(stored.seed, stored.info, latency_ms=None)
        if self.number > 1:
            generated = self.take_parked()
        if generated is None:
            called = self.call_bedrock()
            if called is None or isinstance(called, _NoBudget | _NotCalled):
                return self.not_called(called)
            answer, result = called
            latency_ms = answer.latency_ms
            self.observe_call(
                "filtered" if isinstance(result, Filtered) else "image", answer.latency_ms
            )
            if isinstance(result, Filtered):
                if result.image_withheld and self.services.settings.filtered_images_billed:
                    self.book_purchase()
                return self.finish(
                    JobStatus.FILTERED,
                    {
                        "seed": result.seed,
                        "finish_reason": result.reason,
                        "bedrock_latency_ms": latency_ms,
                    },
                    seed=result.seed,
                )
            generated = result
            # The image is bought: from Bedrock's answer until it is uploaded (or parked) it
            # exists only in this process, and Redis is asked nothing before the upload (a cancel
            # requested meanwhile is found by the finish).
            self.bought_at = self.answered_at
            log.info("job image bought", extra=self.facts())
            self.book_purchase()
        info = inspect_image(generated.image, self.request.image_format)
        self.upload(generated, info)
        self.kept("uploaded")
        return self.succeed(generated.seed, info, latency_ms, cancel_wins=True)

    def call_bedrock(
        self,
    ) -> tuple[BedrockAnswer, Generated | Filtered] | _NoBudget | _NotCalled | None:
        """InvokeModel (the dispatcher took the quota's token when it released the job), and
        what its answer holds; None when the job was canceled meanwhile, ``_NO_BUDGET`` when its
        image was bought already, is lost, and its tenant's hard budget has no room for a new
        one; ``_NotCalled`` when Redis says it must not start (the lease is gone, or no replica
        confirmed the call mark). The limiter hears how the call went (an answer once the
        attempt has kept the image: ``report_answer``)."""
        model_id = self.record.model_id
        store = self.services.store
        images = fetch_inputs(
            self.services.s3,
            self.services.reads,
            model_id,
            self.request,
            tenant=self.record.tenant,
            max_bytes=self.services.settings.input_image_max_bytes,
        )
        body = self.request.to_bedrock_body(images)
        # From here until the answer is booked or the job let go, a death of this process
        # loses an answer Bedrock may have billed: the redrive then books it as spent. A cancel
        # requested since the claim is seen here, and nothing is marked.
        if self.call_marked:
            mark, self.call_marked = CallMark.OK, False
        else:
            mark = store.mark_calling(self.job_id, self.owner, calling=True)
        if mark is CallMark.CANCELED:
            return None
        if mark is CallMark.BUDGET:
            return _NO_BUDGET
        if mark is CallMark.UNCONFIRMED:
            # Written on the primary: held until the retry clears it (or it is given back).
            self.call_marked = True
        if mark in (CallMark.LEASE, CallMark.UNCONFIRMED):
            return _NotCalled(mark)
        log.info("job calling Bedrock", extra=self.facts())
        client, region = self.client(), self.pool.region
        with spans.bedrock_call(model_id, region, self.pool.name) as span:
            try:
                answer = invoke_model(client, model_id, body)
            except BedrockCallError as e:
                spans.bedrock_failed(span, e)
                self.call_failed(e)
                raise
            self.answered_at = time.perf_counter()
            self.answer_unreported = True
            facts = (answer.request_id, answer.invocation_latency_ms)
            try:
                result = interpret(answer.payload)
            except JobError as e:
                spans.bedrock_answered(span, answer.request_id, answer.latency_ms, e.code)
                self.answer_facts = (e.code, *facts, None)
                raise
            outcome = "filtered" if isinstance(result, Filtered) else "image"
            spans.bedrock_answered(span, answer.request_id, answer.latency_ms, outcome)
            billed = not isinstance(result, Filtered) or (
                result.image_withheld and self.services.settings.filtered_images_billed
            )
            price = to_micro(self.services.settings.pool_price_usd(self.pool, model_id))
            self.answer_facts = (outcome, *facts, price if billed else None)
        # The image is held once from here, as bytes: the answer's base64 text goes now.
        return dataclasses.replace(answer, payload={}), result

    def client(self) -> BedrockRuntimeClient:
        """The Bedrock client of the job's pool."""
        if self.pool.implicit:
            return self.services.bedrock
        pools = self.services.pools
        if pools is None:
            from imagegen.bedrock import PoolClients  # noqa: PLC0415 - only without a runtime

            pools = PoolClients(self.services.settings, max_pool_connections=2)
        return pools.client(self.pool)

    def pooled_name(self) -> str | None:
        """The job's configured pool (None: the implicit one, the model's own bucket)."""
        return None if self.pool.implicit else self.pool.name

    def call_line(self, outcome: str, request_id: str | None, invocation_ms: int | None) -> str:
        """The call's attribution: one JSON line of the job's ``calls`` field."""
        return json.dumps(
            {
                "attempt": self.number,
                "at": round(time.time() * 1000),
                "pool": self.pool.name,
                "region": self.pool.region,
                "request_id": request_id,
                "invocation_latency_ms": invocation_ms,
                "outcome": outcome,
            },
            separators=(",", ":"),
        )

    def answer_line(self) -> str:
        """The answered call's attribution line, for the attempt's final transition to add in
        the same step ('' when there is none, or it is noted already)."""
        if self.answer_facts is None or not self.answer_unreported or self.answer_noted:
            return ""
        outcome, request_id, invocation_ms, _ = self.answer_facts
        return self.call_line(outcome, request_id, invocation_ms)

    def attribute(
        self,
        outcome: str,
        request_id: str | None,
        invocation_ms: int | None,
        billed_micro: int | None,
        *,
        noted: bool = False,
        counted: bool = False,
    ) -> None:
        """Record which pool made this call and how it went: a line in the job's record (unless
        ``noted``: the attempt's final transition added it), the pool's day counters (unless
        ``counted``: sent with the finish) and metrics (bookkeeping only: a Redis error is
        logged)."""
        pool, model_id = self.pool, self.record.model_id
        metrics.POOL_CALLS.labels(pool.name, pool.region, model_id, outcome).inc()
        stats = self.services.pool_stats
        if not noted:
            line = self.call_line(outcome, request_id, invocation_ms)
            self.best_effort(
                "attribute the call",
                lambda: self.services.store.note_call(self.job_id, self.owner, self.number, line),
            )
        if stats is not None and not counted:
            self.best_effort(
                "count the pool's call",
                lambda: stats.count(pool.name, model_id, outcome, billed_micro=billed_micro),
            )

    def report_answer(self) -> None:
        """Tell the limiter the call was answered (once; after the image is kept)."""
        limiter, model_id = self.services.limiter, self.record.model_id
        if not self.answer_unreported:
            return
        self.answer_unreported = False
        if limiter.enabled(model_id) and not self.limiter_told:
            self.best_effort(
                "report the call to the limiter",
                lambda: limiter.report(model_id, pool=self.pooled_name()),
            )
        if self.answer_facts is not None:
            self.attribute(*self.answer_facts, noted=self.answer_noted, counted=self.answer_counted)

    def call_failed(self, e: BedrockCallError) -> None:
        """The call raised: book what it may have cost, count it, tell the limiter."""
        store, limiter, model_id = self.services.store, self.services.limiter, self.record.model_id
        if e.code in BILLED_UNSEEN:
            # Bedrock may have generated (and billed) the image nobody read: booked when the
            # attempt ends, like a bought one.
            self.bought = True
            log.warning("job call timed out after it was sent; booked as spent", extra=self.facts())
        else:
            self.best_effort(
                "clear the call",
                lambda: store.mark_calling(self.job_id, self.owner, calling=False),
            )
        metrics.BEDROCK_CALLS.labels(model_id, e.code).inc()
        billed = to_micro(self.services.settings.pool_price_usd(self.pool, model_id))
        self.attribute(e.code, e.request_id, None, billed if e.code in BILLED_UNSEEN else None)
        pooled = self.pooled_name()
        if e.code == THROTTLED and limiter.enabled(model_id):
            limiter.report(model_id, throttled=True, pool=pooled)
        elif pooled is not None and opens_circuit(e.code, e.message):
            limiter.report(model_id, pool=pooled, denied=e.code)
            metrics.POOL_CIRCUIT_OPENS.labels(pooled, model_id, e.code).inc()
            log.warning("pool circuit opened", extra=self.facts(pool=pooled, error_code=e.code))
        elif pooled is not None and disposition_of(e) is not Disposition.FAIL:
            # A 5xx or a timeout: a run of them opens the pool's circuit.
            self.best_effort(
                "report the failure to the pool",
                lambda: limiter.report(model_id, pool=pooled, failed=e.code),
            )

    def book_purchase(self) -> None:
        """The image is bought: the attempt's end (its final status, or its retry) books it as
        the tenant's spend and the job's cost; if this process dies first, the redrive books
        the call it finds in flight."""
        self.bought = True

    def not_called(self, why: _NoBudget | _NotCalled | None) -> JobOutcome:
        """The call did not start: the job was canceled (None), must wait for its budget, or
        Redis said no (``_NotCalled``)."""
        if why is None:
            return self.finish(JobStatus.CANCELED, {})
        if isinstance(why, _NotCalled):
            return self.not_confirmed() if why.mark is CallMark.UNCONFIRMED else self.lease_lost()
        return self.wait_for_budget()

    def lease_lost(self) -> JobOutcome:
        """Another attempt, or the redrive, holds the job now: nothing was bought, nothing to do."""
        metrics.LEASES_LOST.inc()
        log.warning("job call not started: the lease was lost", extra=self.facts())
        return JobOutcome(self.job_id, ClaimState.BUSY.value, model_id=self.record.model_id)

    def not_confirmed(self) -> JobOutcome:
        """No Redis replica confirmed the call mark in time: nothing was bought; give the job
        back (the retry clears the mark; the job keeps its reservation), without counting the
        attempt, to try again shortly."""
        given_back = self.services.store.release_for_retry(
            self.job_id,
            self.owner,
            attempt=self.number,
            error_code=NOT_REPLICATED,
            message="no Redis replica confirmed the call's mark in time; the call did not start",
            delay_s=NOT_REPLICATED_DELAY_S,
            free=True,
        )
        log.warning(
            "job call not started: no Redis replica confirmed its mark",
            extra=self.facts(given_back=given_back),
        )
        return JobOutcome(self.job_id, RETRY_SCHEDULED, model_id=self.record.model_id)

    def wait_for_budget(self) -> JobOutcome:
        """Give the job back to wait for its tenant's budget (no attempt is counted as failed)."""
        given_back = self.services.store.release_for_retry(
            self.job_id,
            self.owner,
            attempt=self.number,
            error_code=BUDGET_WAIT,
            message="its image must be bought again and its tenant's hard budget has no room",
            delay_s=0.0,
            free=True,
        )
        log.info("job waits for its budget", extra=self.facts(given_back=given_back))
        return JobOutcome(self.job_id, RETRY_SCHEDULED, model_id=self.record.model_id)

    def best_effort(self, what: str, action: Callable[[], Any]) -> Any:
        """Run a bookkeeping step after an image was bought; when Redis fails it, log and go on
        (None), so the image is stored all the same."""
        try:
            return action()
        except redis.RedisError as e:
            log.warning(
                "bookkeeping failed after a bought image; going on",
                extra=self.facts(step=what, error=f"{type(e).__name__}: {e}"),
            )
            return None

    def observe_call(self, outcome: str, latency_ms: int) -> None:
        model_id = self.record.model_id
        metrics.BEDROCK_CALLS.labels(model_id, outcome).inc()
        metrics.BEDROCK_LATENCY.labels(model_id).observe(
            latency_ms / 1000, exemplar=tracing.exemplar()
        )

    def facts(self, **more: Any) -> dict[str, Any]:
        """What every log line of this attempt says."""
        return {
            "job_id": self.job_id,
            "attempt": self.number,
            "model_id": self.record.model_id,
            "queue": self.record.priority,
            "tenant": self.record.tenant,
            **more,
        }

    def job_facts(self) -> JobFacts:
        """What the image's object says of this job (``imagegen.image_facts``)."""
        return JobFacts.of(self.record, self.idempotency)

    def stored_earlier(self) -> tuple[str, StoredImage] | None:
        """The key and image an earlier attempt stored (a re-run), or an earlier life of this
        job whose record Redis lost (a first attempt after a loss)."""
        s3 = self.services.s3
        if self.number > 1:
            stored = find_stored_image(s3, self.bucket, self.key, self.job_id)
            return None if stored is None else (self.key, stored)
        lost = self.services.lost_images
        if lost is None:
            return None
        return lost.find(s3, self.record, self.request.image_format)

    def take_parked(self) -> Generated | None:
        parked = self.services.store.parked_image(self.job_id)
        if parked is None:
            return None
        seed, image_base64 = parked
        log.info("job uses parked image", extra=self.facts())
        return Generated(image=base64.b64decode(image_base64), seed=seed)

    def upload(self, generated: Generated, info: ImageInfo) -> None:
        settings = self.services.settings
        try:
            with spans.s3_put(self.bucket, self.key, len(generated.image)):
                upload_image(
                    self.services.s3,
                    self.bucket,
                    self.key,
                    generated.image,
                    info=info,
                    facts=self.job_facts(),
                    seed=generated.seed,
                    attempts=settings.s3_upload_attempts,
                )
        except JobError:
            self.services.store.park_image(
                self.job_id, generated.seed, base64.b64encode(generated.image).decode()
            )
            self.kept("parked")
            raise

    def kept(self, where: str) -> None:
        """The bought image is safe (in S3, or parked in Redis): log how long it was not."""
        if self.bought_at is None:
            return
        window_ms = round((time.perf_counter() - self.bought_at) * 1000, 1)
        metrics.BOUGHT_TO_KEPT.observe(window_ms / 1000)
        log.info("job image kept", extra=self.facts(kept=where, window_ms=window_ms))
        self.bought_at = None

    def succeed(
        self,
        seed: int | None,
        info: ImageInfo,
        latency_ms: int | None,
        *,
        cancel_wins: bool = False,
    ) -> JobOutcome:
        """Finish the job with its stored image; with ``cancel_wins`` a cancel requested while
        the attempt ran ends it canceled instead (``canceled_after_upload``)."""
        fields: dict[str, str | int | None] = {
            "seed": seed,
            "s3_bucket": self.bucket,
            "s3_key": self.key,
            "s3_uri": s3_uri(self.bucket, self.key),
            "content_type": info.content_type,
            "width": info.width,
            "height": info.height,
            "bytes": info.bytes,
            "sha256": info.sha256,
            "error_code": None,
            "error_message": None,
        }
        if latency_ms is not None:
            fields["bedrock_latency_ms"] = latency_ms
        outcome = self.finish(
            JobStatus.SUCCEEDED, fields, seed=seed, s3_key=self.key, cancel_wins=cancel_wins
        )
        if not self.finished:
            # Another attempt holds the job, or it was final already: the image is in S3, so a
            # parked copy is of no use (the final transition drops its job's own).
            self.services.store.drop_parked_image(self.job_id)
        return outcome

    def finish(
        self,
        status: JobStatus,
        fields: dict[str, str | int | None],
        *,
        seed: int | None = None,
        s3_key: str | None = None,
        attempt_log: tuple[int, str, str] | None = None,
        cancel_wins: bool = False,
    ) -> JobOutcome:
        send_now = self.services.send_now() if self.services.send_now else None
        reserved = send_now.reserve(MOST_DELIVERIES_AT_A_FINISH) if send_now else 0
        claims: list[DeliveryClaim] = []
        call = self.answer_line()
        model_id, stats, limiter = (
            self.record.model_id,
            self.services.pool_stats,
            self.services.limiter,
        )
        facts = self.answer_facts if call else None
        tell = self.answer_unreported and limiter.enabled(model_id)
        sent: dict[str, slice] = {}
        then_replies: tuple[Any, ...] = ()

        def then(pipe: Any) -> None:
            # In the finish's round trip: the limiter's report and the pool's counters of the
            # answered call, then the release of the slot this finish frees (the model's next
            # job goes at once, on the rate as the report left it).
            base = len(pipe)
            if tell:
                limiter.report_in(pipe, model_id, pool=self.pooled_name())
            told = len(pipe)
            if facts is not None and stats is not None:
                stats.count(self.pool.name, model_id, facts[0], billed_micro=facts[3], pipe=pipe)
            counted = len(pipe)
            sent["told"] = slice(0, told - base)
            sent["counted"] = slice(told - base, counted - base)
            self.services.dispatch.release_in(pipe, [model_id])

        try:
            outcome, claims, then_replies = self.services.store.finish(
                self.job_id,
                self.owner,
                status,
                fields,
                attempt_log=attempt_log,
                bought=self.bought,
                send_now=reserved,
                delivery_lease_ms=delivery_lease_ms(self.services.settings),
                slot=endpoint_slot_for(self.record.webhook_url, self.services.settings)
                if reserved
                else None,
                call=call,
                cancel_wins=cancel_wins,
                then=then,
            )
        finally:
            if send_now is not None:
                send_now.send(claims, reserved)
        if outcome is FinishOutcome.CANCEL_REQUESTED:
            self.sent_with_finish(then_replies, sent)
            return self.canceled_after_upload(seed)
        changed = outcome is FinishOutcome.FINISHED
        self.finished = changed
        self.answer_noted = self.answer_noted or (changed and call != "")
        release = self.sent_with_finish(then_replies, sent)
        if changed:
            metrics.JOBS_FINISHED.labels(self.record.model_id, status.value).inc()
        log.info(
            f"job {status.value}",
            extra=self.facts(
                elapsed_ms=self.elapsed_ms(),
                bedrock_latency_ms=fields.get("bedrock_latency_ms"),
                already_final=not changed,
                finish=outcome.value,
            ),
        )
        return JobOutcome(self.job_id, status.value, s3_key, seed, model_id, release)

    def canceled_after_upload(self, seed: int | None) -> JobOutcome:
        """A cancel was requested while the attempt ran: the image it stored is deleted, and
        the job ends canceled (the finish that says so books the image, which was paid for)."""
        log.info("job canceled while it ran; deleting its stored image", extra=self.facts())
        try:
            delete_image(self.services.s3, self.bucket, self.key)
        except JobError as e:
            log.warning(
                "the image of a canceled job could not be deleted",
                extra=self.facts(error=str(e)),
            )
        return self.finish(JobStatus.CANCELED, {"seed": seed}, seed=seed)

    def sent_with_finish(self, replies: tuple[Any, ...], sent: dict[str, slice]) -> Release | None:
        """Read what went with the finish: the limiter's report and the pool's counters (done
        unless they failed: ``report_answer`` then sends them), then the release (None when it
        failed: the release loop runs it)."""
        if not replies:
            return None

        def done(part: str) -> bool:
            found = replies[sent[part]]
            return bool(found) and not any(isinstance(r, Exception) for r in found)

        self.limiter_told = self.limiter_told or done("told")
        self.answer_counted = self.answer_counted or done("counted")
        last = replies[-1]
        if isinstance(last, Exception):
            log.warning(
                "release after the finish failed; the release loop runs it",
                extra=self.facts(error=f"{type(last).__name__}: {last}"),
            )
            return None
        return Dispatch.release_of(last)

    def other_pools(self) -> int:
        """How many other configured pools serve the job's model."""
        model_id = self.record.model_id
        configured = self.services.settings.configured_pools(model_id)
        return sum(1 for p in configured if p.name != self.pool.name)

    def pool_return(self, error: JobError, earlier: int) -> bool:
        """Whether the failure is the pool's and another pool should take the job, without
        spending one of its attempts: a throttle (another pool's token), or a denial that
        opened this pool's circuit (while another pool serves the model). ``earlier``: the
        run's earlier failures with the same code."""
        if self.pooled_name() is None:
            return False
        if error.code == THROTTLED:
            return earlier < FREE_RETURNS_PER_ATTEMPT * self.services.settings.max_attempts
        others = self.other_pools()
        return others > 0 and opens_circuit(error.code, error.message) and earlier < others

    def fail_or_retry(self, error: JobError) -> JobOutcome:
        earlier = sum(1 for entry in self.record.this_run_log() if entry.error_code == error.code)
        free = self.pool_return(error, earlier)
        decision = self.services.policy.decide(error, self.number, earlier)
        if free:
            decision = Decision(retry=True, delay_s=0.0, reason="another pool")
        if decision.retry:
            given_back = self.services.store.release_for_retry(
                self.job_id,
                self.owner,
                attempt=self.number,
                error_code=error.code,
                message=error.message,
                delay_s=decision.delay_s,
                bought=self.bought,
                free=free,
                avoid_pool=self.pooled_name(),
            )
            if not given_back:
                # Another attempt, or the redrive, holds the job now: nothing to schedule.
                metrics.LEASES_LOST.inc()
                log.warning(
                    "job retry not scheduled: the lease was lost",
                    extra=self.facts(error_code=error.code, elapsed_ms=self.elapsed_ms()),
                )
                return JobOutcome(self.job_id, ClaimState.BUSY.value, model_id=self.record.model_id)
            metrics.RETRIES.labels(error.code).inc()
            log.warning(
                "job retry scheduled",
                extra=self.facts(
                    error_code=error.code,
                    delay_s=round(decision.delay_s, 3),
                    elapsed_ms=self.elapsed_ms(),
                ),
            )
            return JobOutcome(self.job_id, RETRY_SCHEDULED, model_id=self.record.model_id)
        log.warning(
            "job giving up", extra=self.facts(error_code=error.code, reason=decision.reason)
        )
        return self.finish(
            JobStatus.FAILED,
            {"error_code": error.code, "error_message": error.message[:1000]},
            attempt_log=(self.number, error.code, error.message),
        )
