"""The job store: the events of a job's lifecycle (``imagegen.lifecycle``), each one Lua script
on the server clock.

submit (its first place) -> released by the dispatcher (``imagegen.store.dispatch``) -> claim ->
(retry, back to the dispatcher at its due time | finish); cancel and expire end a job nobody
holds; redrive puts back a job nobody holds any more; refuse records a raw message that broke
the rules; replay reopens a failed job. A claim takes a lease: a redelivered message finds the
job final, leased by a live attempt, or back in the dispatcher (skipped), or released and free
to run; only the lease owner may mark its call, book its image, retry or finish it. Reading and
listing are ``imagegen.store.job_reads``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from imagegen.errors import ReplicaAckTimeoutError
from imagegen.image_facts import RecoveredJob
from imagegen.records import JobRecord, JobStatus, JobTrace, NewJob
from imagegen.redis import codecs, keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings
from imagegen.store.context import JobContext
from imagegen.store.deliveries import DeliveryClaim, claimed_delivery

if TYPE_CHECKING:
    from redis import Redis

    from imagegen.store.dispatch import Dispatch

__all__ = [
    "IDEMPOTENCY_TTL_S",
    "CallMark",
    "CancelOutcome",
    "Caps",
    "Claim",
    "ClaimState",
    "CreateOutcome",
    "FinishOutcome",
    "Finished",
    "JobStore",
]

log = logging.getLogger("imagegen.jobs")

IDEMPOTENCY_TTL_S = 24 * 3600
EXPIRE_BATCH = 500
# A released job no worker claimed within this long is put back in its waiting set (the
# setting ``dispatch_redrive_grace_s``).
REDRIVE_GRACE_S = 60.0
ERROR_MESSAGE_MAX_CHARS = 1000


class CreateOutcome(StrEnum):
    CREATED = "created"
    EXISTS = "exists"  # the job id was taken
    IDEMPOTENT = "idempotent"  # the idempotency key was seen before
    FULL = "full"  # the caps had no room: nothing of the submission was created


@dataclass(frozen=True)
class Caps:
    """How many jobs may be open (not yet final): everybody's and one tenant's."""

    total: int
    per_tenant: int


class CancelOutcome(StrEnum):
    CANCELED = "canceled"
    REQUESTED = "requested"
    TERMINAL = "terminal"
    MISSING = "missing"


class ClaimState(StrEnum):
    CLAIMED = "claimed"
    MISSING = "missing"
    TERMINAL = "terminal"
    BUSY = "busy"
    CANCELED = "canceled"
    EXPIRED = "expired"
    WAITING = "waiting"  # back in the dispatcher: only its next release runs it


class CallMark(StrEnum):
    OK = "ok"
    LEASE = "lease"  # the owner no longer holds the job
    CANCELED = "canceled"  # a cancel was requested: the call must not start
    BUDGET = "budget"  # a re-call its tenant's hard budget has no room for
    # Marked on the primary, but no Redis replica confirmed it in time: the call must not start
    # (a failover now could lose the claim, the reservation and the mark, and the job run again).
    UNCONFIRMED = "unconfirmed"


# Job scripts that never add a webhook delivery: they go without the delivery template (a few
# hundred bytes less for Redis to read per call).
_NO_DELIVERIES = frozenset({"job_calling", "job_note_call"})


class FinishOutcome(StrEnum):
    FINISHED = "finished"
    ALREADY_FINAL = "final"
    NOT_LEASED = "lease"  # another attempt holds the job
    CANCEL_REQUESTED = "cancel"  # a cancel won over the success (``finish(cancel_wins=True)``)


class Finished(NamedTuple):
    outcome: FinishOutcome
    # The job's webhook deliveries claimed for its caller to send at once (``send_now``).
    claims: list[DeliveryClaim]
    # The replies of what ``finish(then=...)`` sent after it (an error is its reply).
    then: tuple[Any, ...] = ()

    @property
    def deliveries(self) -> list[str]:
        return [claim.delivery_id for claim in self.claims]


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    attempt: int
    queue_wait_ms: int | None = None  # creation to first start, on a job's first claim
    # The job's record as the claim left it (without its webhook deliveries), when claimed.
    record: JobRecord | None = None
    # Its trace and its wait, for the attempt's spans (when claimed).
    trace: JobTrace | None = None
    # The configured pool the dispatcher released it to (None: the implicit pool).
    pool: str | None = None
    # Its Idempotency-Key and the request digest that key stands for (None: it had none).
    idempotency: tuple[str, str] | None = None
    # The claim marked the attempt's Bedrock call (``claim(call=True)``): no ``mark_calling``.
    call_marked: bool = False


class JobStore:
    """Job transitions on one Redis client (built with ``decode_responses=True``)."""

    def __init__(
        self,
        redis: Redis,
        retention_s: int,
        webhook_grace_s: float = 30.0,
        redrive_grace_s: float = REDRIVE_GRACE_S,
        *,
        context: JobContext | None = None,
    ) -> None:
        self.redis = redis
        self.retention_s = retention_s
        self.context = context or JobContext(retention_s, round(webhook_grace_s * 1000))
        self._redrive_grace_ms = round(redrive_grace_s * 1000)
        self._scripts = Scripts.of(redis)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> JobStore:
        return cls(
            redis,
            settings.job_retention_s,
            settings.webhook_handoff_grace_s,
            settings.dispatch_redrive_grace_s,
            context=JobContext.from_settings(settings),
        )

    def _run(
        self,
        name: str,
        job_id: str | None,
        args: list[Any],
        *,
        durable: bool = False,
        client: Any = None,
    ) -> Any:
        """A job script on one job (its hash is KEYS[1]) or none, with the job context;
        ``durable`` for a write the service answers for (it waits for a replica); on ``client``
        when given (a pipeline)."""
        job_keys = [keys.job_key(job_id)] if job_id is not None else []
        head = [job_id] if job_id is not None else []
        context = self.context.args(deliveries=name not in _NO_DELIVERIES)
        return self._scripts.run(
            name, job_keys, [*context, *head, *args], durable=durable, client=client
        )

    # -- arriving ----------------------------------------------------------------------------

    def create(
        self,
        jobs: Sequence[NewJob],
        *,
        caps: Caps | None = None,
        dispatch: Dispatch | None = None,
    ) -> list[tuple[CreateOutcome, str]]:
        """Store each job and give it its first place (waiting, after its input job, following
        an identical job, or final from the cache), all in one transaction; when they carry a
        batch id, the batch record too (one batch per call). With ``caps``, nothing is created
        when the jobs would not fit (every outcome is then ``FULL``). With ``dispatch``, the same
        transaction then releases what the quota allows now, so a job with nothing ahead of it
        starts at once.

        Returns per job the outcome and its detail: for ``CREATED``, ``"cached {JSON}"`` (the
        fields it got) when the cache served it at once; for ``IDEMPOTENT``, ``"<request
        sha256> <job id>"`` of the job the key was first used for; for ``FULL``, ``"<scope>
        <waiting> <cap>"`` on the first job."""
        refusal = keys.submit_refusal_key(uuid.uuid4().hex)
        context = self.context.args()
        submits = []
        for index, job in enumerate(jobs):
            idempotency = f"{job.request_sha256} {job.job_id}" if job.idempotency_key else ""
            argv: list[Any] = [
                *context,
                job.job_id,
                idempotency,
                job.tenant or "",
                job.batch_id or "",
                str(IDEMPOTENCY_TTL_S),
                str(len(jobs) if caps is not None and index == 0 else 0),
                str(caps.total if caps else 0),
                str(caps.per_tenant if caps else 0),
                str(len(jobs) if job.batch_id and index == 0 else 0),
            ]
            fields = codecs.new_job_fields(job)
            if dispatch is not None:
                fields |= dispatch.submit_fields(job)
            for name, value in fields.items():
                argv += [name, value]
            tenant = job.tenant
            job_keys = [
                keys.job_key(job.job_id),
                keys.JOB_INDEX_KEY,
                keys.tenant_jobs_key(tenant) if tenant else keys.UNUSED_KEY,
                keys.OPEN_KEY,
                keys.tenant_open_key(tenant) if tenant else keys.UNUSED_KEY,
                keys.idempotency_key(tenant, job.idempotency_key)
                if job.idempotency_key
                else keys.UNUSED_KEY,
                keys.batch_jobs_key(job.batch_id) if job.batch_id else keys.UNUSED_KEY,
                refusal,
                keys.batch_key(job.batch_id) if job.batch_id else keys.UNUSED_KEY,
            ]
            submits.append((job_keys, argv))

        def build(pipe: Any) -> None:
            for job_keys, argv in submits:
                self._scripts.run("job_submit", job_keys, argv, client=pipe)
            if dispatch is not None:
                dispatch.release_in(pipe, sorted({job.model_id for job in jobs}))

        results = self._scripts.execute(build, durable=True)[: len(jobs)]
        return [(CreateOutcome(state), str(detail)) for state, detail in results]

    def refuse(
        self, job_id: str, *, model_id: str, request: Any, error_code: str, problems: str
    ) -> bool:
        """Record a raw-message job that broke the rules as ``failed``, in one step; False when
        the id already had a record."""
        fields = codecs.refused_job_fields(
            model_id, request, error_code, problems[:ERROR_MESSAGE_MAX_CHARS]
        )
        argv: list[str | int] = []
        for name, value in fields.items():
            argv += [name, value]
        return bool(self._run("job_refuse", job_id, argv))

    def recover(self, job: RecoveredJob) -> bool:
        """Re-create the ``succeeded`` record of a job Redis lost, from what its image in S3
        proves (``producer.recover``); its webhook's deliveries are queued as at any finish.
        False when the id already has a record (nothing changes)."""
        tenant = job.facts.tenant
        idempotency = job.facts.idempotency
        # The key answers for what is left of its day, as it would have.
        idempotency_ttl_s = (
            (job.facts.created_ms - int(time.time() * 1000)) // 1000 + IDEMPOTENCY_TTL_S
            if idempotency
            else 0
        )
        argv: list[str | int] = [
            job.facts.job_id,
            tenant or "",
            job.finished_ms,
            max(0, idempotency_ttl_s),
        ]
        for name, value in codecs.recovered_job_fields(job).items():
            argv += [name, value]
        job_keys = [
            keys.job_key(job.facts.job_id),
            keys.JOB_INDEX_KEY,
            keys.tenant_jobs_key(tenant) if tenant else keys.UNUSED_KEY,
            keys.idempotency_key(tenant, idempotency[0]) if idempotency else keys.UNUSED_KEY,
        ]
        recreated = self._scripts.run(
            "job_recover", job_keys, [*self.context.args(), *argv], durable=True
        )
        return bool(recreated)

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(keys.job_key(job_id)))

    # -- ending before a start ---------------------------------------------------------------

    def cancel(self, job_id: str) -> CancelOutcome:
        return CancelOutcome(self._run("job_cancel", job_id, [], durable=True))

    def expire_due(self) -> list[str]:
        """End jobs whose deadline passed before they ever started; returns their ids."""
        expired = self._scripts.run(
            "job_expire_due", [keys.DEADLINES_KEY], [*self.context.args(), EXPIRE_BATCH]
        )
        return [str(job_id) for job_id in expired]

    def redrive_due(self) -> list[str]:
        """Put back in their waiting sets the jobs nobody holds: running ones whose lease ran
        out (a dead worker's, an attempt that lost Redis) and released ones no worker claimed
        within the grace (a message lost with its worker); returns their ids. A lease that ran
        out with a Bedrock call in flight books that call's image as spent."""
        put_back = self._scripts.run(
            "job_redrive", [], [*self.context.args(), EXPIRE_BATCH, self._redrive_grace_ms]
        )
        return [str(job_id) for job_id in put_back]

    def mark_calling(self, job_id: str, owner: str, calling: bool) -> CallMark:
        """Mark (or clear) the Bedrock call in flight of the lease owner's attempt. ``LEASE``
        when the owner no longer holds the job; ``CANCELED`` (nothing marked) when a cancel was
        requested; ``BUDGET`` when the job, whose image was already bought, must call again and
        its tenant's hard budget has no room (give it back).

        Marking is the last write before money is spent, so it waits for a replica
        (``imagegen.redis.replica_ack``): replication keeps order, so a replica that has the
        mark has the job's claim and its reservation too. ``UNCONFIRMED`` when none confirmed
        in time: the call must not start."""
        if not calling:
            return CallMark(self._run("job_calling", job_id, [owner, ""]))
        try:
            return CallMark(self._run("job_calling", job_id, [owner, "1"], durable=True))
        except ReplicaAckTimeoutError as e:
            mark = CallMark(str(e.replies[0]))
            return CallMark.UNCONFIRMED if mark is CallMark.OK else mark

    # -- running -----------------------------------------------------------------------------

    def claim(self, job_id: str, owner: str, lease_ms: int, *, call: bool = False) -> Claim:
        """Take the released job for one attempt; a claimed one comes with its record (one round
        trip). ``call``: the attempt calls Bedrock straight after, so a first attempt with no
        input image to fetch and no cached image to copy, whose price is reserved, has its call
        marked here (``Claim.call_marked``) as ``mark_calling`` would, and waits for a replica
        as that does; when none confirms in time the claim stands, unmarked for the attempt.
        The record is read by an HGETALL sent with the claim, in the same round trip."""

        def build(pipe: Any) -> None:
            self._run("job_claim", job_id, [owner, lease_ms, "1" if call else ""], client=pipe)
            pipe.hgetall(keys.job_key(job_id))

        try:
            answer, fields = self._scripts.execute(build, transaction=False, durable=call)
        except ReplicaAckTimeoutError as e:
            answer, fields = e.replies
            marked_unconfirmed = True
        else:
            marked_unconfirmed = False
        state, attempts, waited_ms, marked = answer
        waited = int(waited_ms)
        record, trace, pool, idempotency = None, None, None, None
        if state == ClaimState.CLAIMED.value and fields:
            record, trace = codecs.record_from_hash(fields), codecs.job_trace(fields)
            pool = fields.get("pool") or None
            idempotency = codecs.idempotency_of(fields)
        return Claim(
            ClaimState(state),
            int(attempts),
            None if waited < 0 else waited,
            record,
            trace,
            pool,
            idempotency,
            call_marked=bool(int(marked)) and not marked_unconfirmed,
        )

    def copy_source(self, job_id: str) -> tuple[str, str] | None:
        """The cached image (bucket, key) this job copies instead of calling Bedrock, if any."""
        bucket, key = self.redis.hmget(keys.job_key(job_id), ["copy_from_bucket", "copy_from_key"])
        return (str(bucket), str(key)) if bucket and key else None

    def release_for_retry(
        self,
        job_id: str,
        owner: str,
        *,
        attempt: int,
        error_code: str,
        message: str,
        delay_s: float,
        bought: bool = False,
        free: bool = False,
        avoid_pool: str | None = None,
    ) -> bool:
        """Give the lease back after a retryable failure (``bought``: the attempt bought an
        image, booked now); False when ``owner`` no longer holds the job (another attempt, or
        the redrive, has it). ``free``: the attempt is not counted against the job's attempts
        (a pool throttled or refused it: another pool takes it). ``avoid_pool``: its next
        release prefers any other pool with a token.

        A retry that books a bought image waits for a replica, like a final status: it covers
        the image parked before it (the only copy of one whose upload failed) and the booking.
        When none confirms in time the retry stands on the primary and the attempt goes on."""
        line = codecs.attempt_line(attempt, error_code, message, delay_s)
        argv = [
            owner,
            line,
            round(delay_s * 1000),
            error_code,
            message[:ERROR_MESSAGE_MAX_CHARS],
            "1" if bought else "",
            "1" if free else "",
            avoid_pool or "",
        ]
        try:
            released = self._run("job_retry", job_id, argv, durable=bought)
        except ReplicaAckTimeoutError as e:
            log.warning(
                "retry with a bought image not confirmed by a Redis replica in time",
                extra={"job_id": job_id, "error_code": error_code},
            )
            released = e.replies[0]
        return bool(released)

    def note_call(self, job_id: str, owner: str, attempt: int, call: str) -> bool:
        """Add one Bedrock call's attribution line (JSON: pool, Region, request id, latency,
        outcome) to the job's record: while ``owner`` holds its lease, or after ``attempt``
        ended while no later one started."""
        return bool(self._run("job_note_call", job_id, [owner, attempt, call]))

    def finish(
        self,
        job_id: str,
        owner: str,
        status: JobStatus,
        fields: dict[str, str | int | None],
        *,
        attempt_log: tuple[int, str, str] | None = None,
        bought: bool = False,
        send_now: int = 0,
        delivery_lease_ms: int = 0,
        call: str = "",
        slot: tuple[str, int, str] | None = None,
        cancel_wins: bool = False,
        then: Callable[[Any], None] | None = None,
    ) -> Finished:
        """Write the final status and its fields, when ``owner`` holds the job's lease.

        ``attempt_log`` (attempt, error code, message) adds the last attempt to the log;
        ``bought`` says this attempt bought an image: it is booked as spent now (its reservation,
        in the periods it was held in). With ``send_now`` the caller sends up to that many of the
        job's new webhook deliveries itself: they come back claimed for their first attempt (a
        lease of ``delivery_lease_ms``), with no message queued for them; the outbox sends them
        when the lease ends if the caller does not. Any others are queued as usual. ``call``:
        the attempt's Bedrock call attribution, added in the same step (as ``note_call``; only
        when the job is finished here). ``slot`` (endpoint, cap, slot id): the first delivery
        claimed to the job's webhook takes that slot of its endpoint's deliveries in flight
        here, when one is free (``DeliveryClaim.slot``), as ``Deliveries.take_endpoint_slot``
        would. With ``cancel_wins`` a cancel requested while the attempt ran wins over a
        ``succeeded``: nothing changes (``FinishOutcome.CANCEL_REQUESTED``), and the caller
        finishes the job canceled. ``then`` queues more commands on the pipeline of the
        finish, sent in the same round trip and run after it (the release of the slot it freed,
        the pool's counters): their replies come back in ``Finished.then``, an error as its
        reply, never raised."""
        if not status.is_terminal:
            msg = f"{status} is not a final status"
            raise ValueError(msg)
        line = codecs.attempt_line(*attempt_log, None) if attempt_log else ""
        argv: list[str | int] = [
            status.value,
            line,
            owner,
            "1" if bought else "",
            send_now,
            delivery_lease_ms,
            call,
            keys.endpoint_inflight_key(slot[0]) if slot else "",
            slot[1] if slot else 0,
            slot[2] if slot else "",
            "1" if cancel_wins else "",
        ]
        for name, value in fields.items():
            argv += [name, "" if value is None else value]

        def build(pipe: Any) -> None:
            self._scripts.run(
                "job_finish",
                [keys.job_key(job_id)],
                [*self.context.args(), job_id, *argv],
                client=pipe,
            )
            # The record the claimed deliveries carry, as the finish left it.
            pipe.hgetall(keys.job_key(job_id))
            if then is not None:
                then(pipe)

        try:
            replies = self._scripts.execute(
                build, transaction=False, durable=True, raise_errors=False
            )
        except ReplicaAckTimeoutError as e:
            # Written on the primary: the attempt goes on (a failover that lost it puts the
            # job back to run, as for a worker that died here).
            log.warning(
                "final status not confirmed by a Redis replica in time",
                extra={"job_id": job_id, "status": status.value},
            )
            replies = list(e.replies)
        answer, record, after = replies[0], replies[1], tuple(replies[2:])
        if isinstance(answer, Exception):
            raise answer
        changed, detail, *rest = cast("list[Any]", answer)
        if not int(changed):
            return Finished(FinishOutcome(detail), [], after)
        claimed = int(detail)
        if not claimed:
            return Finished(FinishOutcome.FINISHED, [], after)
        if isinstance(record, Exception):
            raise record
        sent, (secrets,) = rest[: 5 * claimed], rest[5 * claimed :]
        claims = [
            claimed_delivery(
                str(sent[i]),
                1,
                (job_id, *sent[i + 1 : i + 4]),
                secrets,
                record,
                slot=str(sent[i + 4]),
            )
            for i in range(0, len(sent), 5)
        ]
        return Finished(FinishOutcome.FINISHED, claims, after)

    # -- images bought but not yet stored ----------------------------------------------------

    def park_image(self, job_id: str, seed: int | None, image_base64: str) -> None:
        """Keep a bought image whose upload failed, for the next attempt to upload."""
        parked = json.dumps({"seed": seed, "image": image_base64})
        self.redis.set(keys.parked_image_key(job_id), parked, ex=self.retention_s)

    def parked_image(self, job_id: str) -> tuple[int | None, str] | None:
        """The parked image's seed and base64 bytes, if there is one."""
        raw = self.redis.get(keys.parked_image_key(job_id))
        if raw is None:
            return None
        parked = json.loads(cast("str", raw))
        seed = parked["seed"]
        return (None if seed is None else int(seed)), str(parked["image"])

    def drop_parked_image(self, job_id: str) -> None:
        """Forget a parked image (a job's final transition drops its own)."""
        self.redis.delete(keys.parked_image_key(job_id))

    # -- the dead-letter set -----------------------------------------------------------------

    def dead_letter_ids(self, limit: int = 1000) -> list[str]:
        """Failed job ids, oldest failure first."""
        return [str(job_id) for job_id in self.redis.zrange(keys.DLQ_KEY, 0, limit - 1)]

    def dead_letters(self, limit: int = 1000) -> list[JobRecord]:
        """The failed jobs' records (ids whose record expired are dropped from the set)."""
        ids = self.dead_letter_ids(limit)
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(keys.job_key(job_id))
        found = []
        for job_id, fields in zip(ids, pipe.execute(), strict=True):
            if fields:
                found.append(codecs.record_from_hash(fields))
            else:
                self.redis.zrem(keys.DLQ_KEY, job_id)
        return found

    def replay(self, job_ids: Iterable[str]) -> list[str]:
        """Put these failed jobs back in their waiting sets; returns the ids replayed."""
        replayed = []
        for job_id in job_ids:
            if self._run("job_replay", job_id, []):
                replayed.append(job_id)
        return replayed
