"""The Redis key schema, in one place. Every key the service writes is built here.

=====================================  ======  =================================================
key                                    type    what it holds
=====================================  ======  =================================================
``imagegen:job:{job_id}``              hash    the job record (fields: see ``imagegen.records``;
                                               ``place``: ``imagegen.lifecycle``); no TTL while
                                               the job is open, ``job_retention_s`` once final
``imagegen:job:{job_id}:next``         list    jobs waiting for this one's output (chain steps),
                                               while it is open
``imagegen:job:{job_id}:parked-image`` string  image bytes bought from Bedrock whose S3 upload
                                               failed, so a retry uploads them instead of
                                               paying for a new one (expires with the record)
``imagegen:jobs``                      zset    job ids scored by creation time (ms), for listing;
                                               trimmed past the retention
``imagegen:open``                      zset    jobs not yet final, waiting, released or running
                                               (what the queue caps count), by creation
``imagegen:running``                   zset    jobs running under a lease, scored by the
                                               lease's end (ms); the sweeper puts back in their
                                               waiting set the jobs whose lease ran out
``imagegen:deadlines``                 zset    queued jobs with an ``expires_at``, by deadline (ms)
``imagegen:tenant:{tenant}``           hash    a tenant's settings: ``webhook_url``, its weight and
                                               caps, its budgets (``budget_daily_hard`` ...,
                                               micro-dollars), ``budget_on_exceed`` and
                                               ``cache_shared``
``imagegen:tenant:{tenant}:jobs``      zset    the tenant's job ids by creation time (ms)
``imagegen:tenant:{tenant}:open``      zset    the tenant's jobs not yet final
``imagegen:tenant:{tenant}:active``    zset    the tenant's jobs released or running (its
                                               concurrency cap), by release time (ms)
``imagegen:tenant:{tenant}:bucket``    hash    the tenant's own rate cap (token bucket), if any
``imagegen:tenant:{tenant}:events``    pubsub  ``{"job_id", "status", "place"}`` for each of the
                                               tenant's jobs: created, started, final (what the
                                               console's live pages follow; never the prompt)
``...:{tenant}:model:{model}``         zset    the tenant's jobs of one model, by creation (ms)
``...:{tenant}:word:{word}``           zset    the tenant's jobs whose prompt has the word
                                               (``imagegen.store.prompt_words``), by creation;
                                               the newest 100,000 kept
``...:{tenant}:status:{status}``       zset    the tenant's final jobs of one status, by
                                               creation (filed by ``JobIndex.settle``)
``...:{tenant}:unsettled``             zset    the tenant's indexed jobs not filed by status yet
``...:{tenant}:settling``              string  held while one process files them (1 s / 10 s)
                                               (these five: trimmed past the job retention on
                                               each write, and expire with it)
``imagegen:batch:{batch_id}``          hash    a batch: tenant, size, created_ms
``imagegen:batch:{batch_id}:jobs``     list    the batch's job ids, in submission order
``imagegen:idem:{tenant}:{key}``       string  ``{request sha256} {job_id}`` for an
                                               Idempotency-Key, kept 24 h
``imagegen:apikey:{sha256}``           hash    an API key (stored hashed): key_id, tenant
``imagegen:apikeys``                   hash    key_id -> sha256 of the key, for list and revoke
``imagegen:console:{sha256}``          hash    a console session (its token stored hashed):
                                               role, tenant, key_id; expires with the session
``imagegen:authfail:client:{address}`` string failed authentications from one client address
``imagegen:authfail:key:{key id}``     string  ... and with one key id, each for one minute
``imagegen:events``                    pubsub  one JSON message per job status change (all jobs)
``imagegen:job:{job_id}:events``       pubsub  the same messages for one job (what waiters
                                               and event streams subscribe to)
``imagegen:dlq``                       zset    failed job ids scored by failure time (ms);
                                               trimmed past the job retention
``imagegen:stats``                     hash    fleet-wide counters for /metrics (none per
                                               tenant): ``jobs|{model}|{status}``,
                                               ``images|{model}``, ``retries|{code}``,
                                               ``webhooks|{outcome}``, ``released|{model}``,
                                               ``paused|{reason}``, ``illegal|{event}|{place}``
``imagegen:limiter:{region}:{model}``  hash    the shared token bucket of one Bedrock quota:
                                               ``tokens``, ``updated_ms``, ``rate_rpm``
                                               (effective), ``configured_rpm``,
                                               ``last_decrease_ms``, ``throttles_total``
``...:{model}:calls``                  zset    ``{tenant}|{job_id}`` of the jobs released (one
                                               Bedrock call each) in the last minute, by time
                                               (ms): the rate and each tenant's share of it
``...:{model}:throttles``              zset    ThrottlingExceptions seen, one minute kept
``imagegen:history:{model}``           list    the model's quota and backlog, one JSON sample
                                               every 10 s, the newest 180 (``quota_history``)
``imagegen:history-slot``              string  held by whoever records the current interval
``imagegen:webhook:{delivery_id}``     hash    one webhook delivery (``{job_id}:{event}``, with
                                               ``:{n}`` after the n-th replay): url, state,
                                               attempts, log (JSON lines), webhook_id
``imagegen:endpoint:{url}:inflight``   zset    deliveries in flight to one endpoint
                                               (scheme://host:port), scored by lease expiry
``imagegen:webhooks:due``              zset    the outbox: undelivered deliveries scored by
                                               when they are due (ms)
``imagegen:webhooks:dlq``              zset    deliveries whose retries ran out, by time (ms);
                                               trimmed past the job retention
``imagegen:webhooks:disabled-urls``    zset    endpoint URLs that answered 410 Gone, scored by
                                               when (ms); trimmed past the job retention
``imagegen:webhooks:secrets``          string  the signing secrets of jobs without a tenant, JSON,
                                               newest first
``imagegen:tenant:{tenant}:secrets``   string  a tenant's signing secrets, the same way
``imagegen:webhooks:sweep-lock``       string  held by the one sweeper running at a time
``imagegen:quarantine``                list    messages from our queues that were not tasks of
                                               ours: JSON with reason, queue and the message
                                               (cut at 64 KiB), newest first, 10,000 kept
``imagegen:seq``                       string  counts submissions (the order of jobs submitted in
                                               the same millisecond)
``imagegen:redis:epoch``               hash    this Redis's epoch (``imagegen.epoch``): epoch,
                                               started_ms, and how its data was found lost
                                               (lost_kind, lost_from, lost_at_ms,
                                               lost_submissions)
``imagegen:dispatch:models``           set     models with jobs waiting, paused, due later or
                                               released
``imagegen:dispatch:{model}:tenants``  zset    ready tenant queues of the model, scored by the
                                               start tag of their next job (virtual time)
``...:{model}:paused``                 zset    paused tenant queues, by when they may be served
                                               again (ms; +inf: when an event resumes them)
``...:{model}:waiting``                zset    tenant -> jobs waiting (ready or paused)
``...:{model}:weight``                 hash    ready tenant -> its weight (``weight_sum`` in
                                               ``:state`` adds them up)
``...:{model}:finish``                 zset    idle tenants' last finish tags, while above the
                                               virtual time
``...:{model}:wait:{tenant}:{class}``  zset    one tenant's waiting jobs of one priority class,
                                               by deadline (ms), then submission (see
                                               ``order_score`` in ``scripts/lib/queues.lua``)
``...:{model}:since:{class}``          zset    every waiting job of the class, by when it began
                                               to wait (ms): the oldest waiting job's age
``...:{model}:waits``                  list    ``{tenant}|{ms waited}|{at ms}`` of the model's
                                               last 2,000 jobs started (up to 100 more
                                               between trims); expires 7 days after its
                                               last start (every 100th, or any while short)
``...:{model}:delayed``                zset    jobs waiting for a retry's due time (ms)
``...:{model}:released``               zset    jobs released to a Celery queue and not claimed
                                               yet, by release time (ms)
``...:{model}:active``                 zset    jobs released or running (the model's
                                               concurrency cap), by release time (ms)
``...:{model}:state``                  hash    ``vtime`` (the virtual time), ``jobs`` (waiting),
                                               ``weight_sum``, ``run_ms`` (mean run time),
                                               ``paused|{reason}`` (queues paused); per tenant
                                               with jobs waiting: ``streak|{tenant}``,
                                               ``pause|{tenant}``, ``ptag|{tenant}``
``imagegen:tenant:{tenant}:paused``    hash    model -> why the tenant's queue of it is paused
``imagegen:spend:{tenant}:{period}``   hash    a tenant's Bedrock spend in one UTC day
                                               (``d:YYYY-MM-DD``) or month (``m:YYYY-MM``), in
                                               micro-dollars: ``spent``, ``reserved`` (released
                                               jobs not settled yet), ``spent|{model}``,
                                               ``images|{model}``, ``warned`` (its soft budget
                                               was crossed); ``-`` for jobs without a tenant;
                                               kept the spend retention after its period ends
``imagegen:spend:{tenant}:days``       set     the days with spend (``d:YYYY-MM-DD``); expires with
                                               the newest day's ledger
``imagegen:spend:tenants``             zset    tenants with any spend, by their last booking
                                               (ms), for reports; trimmed past the ledgers' life
``imagegen:cache:{scope}:{sha256}``    hash    a cached image (jobs with a fixed seed): the job
                                               that bought it and where it is; the scope is the
                                               tenant (``-``: none) or ``+shared`` for tenants
                                               that share; expires after ``cache_ttl_s``
``...:{sha256}:leader``                string  the job buying that image now
``...:{sha256}:followers``             list    identical jobs waiting for it (not for a call)
``imagegen:intake``                    list    the plain intake: JSON jobs pushed by backends
                                               that speak only Redis (LPUSH), taken oldest first
``imagegen:intake:readers``            zset    readers of the intake in the middle of a pass, by
                                               the end of their lease (ms, server clock)
``imagegen:intake:reader:{token}``     list    the messages one reader took and has not handled
                                               yet; a lapsed reader's go back onto the intake
``interactive``, ``batch``,            list    Celery queues (kombu's Redis transport owns them)
``webhooks``
=====================================  ======  =================================================
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "APIKEYS_KEY",
    "BATCH_KEY_PREFIX",
    "CACHE_PREFIX",
    "DEADLINES_KEY",
    "DISPATCH_MODELS_KEY",
    "DLQ_KEY",
    "EVENTS_CHANNEL",
    "INTAKE_KEY",
    "INTAKE_READERS_KEY",
    "JOB_INDEX_KEY",
    "JOB_KEY_PREFIX",
    "NO_TENANT",
    "OPEN_KEY",
    "QUARANTINE_KEY",
    "REDIS_EPOCH_KEY",
    "RUNNING_KEY",
    "SHARED_CACHE_SCOPE",
    "SPEND_PREFIX",
    "SPEND_TENANTS_KEY",
    "STATS_KEY",
    "SUBMISSION_SEQ_KEY",
    "TENANT_EVENTS_SUFFIX",
    "TENANT_KEY_PREFIX",
    "UNUSED_KEY",
    "WEBHOOKS_DISABLED_KEY",
    "WEBHOOKS_DLQ_KEY",
    "WEBHOOKS_DUE_KEY",
    "WEBHOOK_KEY_PREFIX",
    "WEBHOOK_SECRETS_KEY",
    "WEBHOOK_SWEEP_LOCK_KEY",
    "DispatchKeys",
    "LimiterKeys",
    "apikey_key",
    "auth_failures_key",
    "batch_jobs_key",
    "batch_key",
    "console_session_key",
    "dispatch_keys",
    "endpoint_inflight_key",
    "idempotency_key",
    "intake_reader_key",
    "job_events_channel",
    "job_key",
    "limiter_keys",
    "parked_image_key",
    "quota_history_key",
    "quota_history_slot_key",
    "recent_waits_key",
    "spend_days_key",
    "spend_key",
    "submit_refusal_key",
    "tenant_events_channel",
    "tenant_jobs_key",
    "tenant_key",
    "tenant_model_jobs_key",
    "tenant_open_key",
    "tenant_settling_key",
    "tenant_status_jobs_key",
    "tenant_unsettled_key",
    "tenant_word_jobs_key",
    "waiting_key",
    "waiting_since_key",
    "webhook_key",
    "webhook_secrets_key",
]

PREFIX = "imagegen"
JOB_INDEX_KEY = f"{PREFIX}:jobs"
EVENTS_CHANNEL = f"{PREFIX}:events"
DLQ_KEY = f"{PREFIX}:dlq"
STATS_KEY = f"{PREFIX}:stats"
OPEN_KEY = f"{PREFIX}:open"
DISPATCH_PREFIX = f"{PREFIX}:dispatch:"
DISPATCH_MODELS_KEY = f"{PREFIX}:dispatch:models"
INTAKE_KEY = f"{PREFIX}:intake"
SPEND_PREFIX = f"{PREFIX}:spend:"
CACHE_PREFIX = f"{PREFIX}:cache:"
# The cache scope of tenants that share cached images (no tenant name starts with "+").
SHARED_CACHE_SCOPE = "+shared"
SPEND_TENANTS_KEY = f"{PREFIX}:spend:tenants"
INTAKE_READERS_KEY = f"{PREFIX}:intake:readers"
# The dispatcher's name for the jobs without a tenant (no tenant name can be "-").
NO_TENANT = "-"
DEADLINES_KEY = f"{PREFIX}:deadlines"
RUNNING_KEY = f"{PREFIX}:running"
APIKEYS_KEY = f"{PREFIX}:apikeys"
BATCH_KEY_PREFIX = f"{PREFIX}:batch:"
# Counts submissions: the order of jobs submitted in the same millisecond.
SUBMISSION_SEQ_KEY = f"{PREFIX}:seq"
# This Redis's epoch, checked against the mark kept in S3 (imagegen.epoch).
REDIS_EPOCH_KEY = f"{PREFIX}:redis:epoch"
JOB_KEY_PREFIX = f"{PREFIX}:job:"
TENANT_KEY_PREFIX = f"{PREFIX}:tenant:"
# A tenant's events channel is its key and this (scripts.py hands it to the Lua transitions).
TENANT_EVENTS_SUFFIX = ":events"
# Stands in for a key a script is given but does not touch (a job without a tenant, say).
UNUSED_KEY = f"{PREFIX}:unused"
WEBHOOK_KEY_PREFIX = f"{PREFIX}:webhook:"
WEBHOOKS_DUE_KEY = f"{PREFIX}:webhooks:due"
WEBHOOKS_DLQ_KEY = f"{PREFIX}:webhooks:dlq"
WEBHOOKS_DISABLED_KEY = f"{PREFIX}:webhooks:disabled-urls"
WEBHOOK_SECRETS_KEY = f"{PREFIX}:webhooks:secrets"
WEBHOOK_SWEEP_LOCK_KEY = f"{PREFIX}:webhooks:sweep-lock"
QUARANTINE_KEY = f"{PREFIX}:quarantine"


def job_key(job_id: str) -> str:
    """The hash holding one job's record."""
    return f"{JOB_KEY_PREFIX}{job_id}"


def job_events_channel(job_id: str) -> str:
    """The pub/sub channel of one job's status changes."""
    return f"{JOB_KEY_PREFIX}{job_id}:events"


def tenant_key(tenant: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}"


def submit_refusal_key(nonce: str) -> str:
    """Marks one submission refused for a full queue (kept a minute)."""
    return f"{PREFIX}:submit-refused:{nonce}"


def webhook_secrets_key(tenant: str | None) -> str:
    """The signing secrets of one tenant's jobs (without a tenant: the global ones)."""
    return f"{TENANT_KEY_PREFIX}{tenant}:secrets" if tenant else WEBHOOK_SECRETS_KEY


def tenant_jobs_key(tenant: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:jobs"


def tenant_open_key(tenant: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:open"


def tenant_events_channel(tenant: str) -> str:
    """The pub/sub channel of one tenant's job events (published by the transitions)."""
    return f"{TENANT_KEY_PREFIX}{tenant}{TENANT_EVENTS_SUFFIX}"


def tenant_model_jobs_key(tenant: str, model_id: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:model:{model_id}"


def tenant_word_jobs_key(tenant: str, word: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:word:{word}"


def tenant_status_jobs_key(tenant: str, status: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:status:{status}"


def tenant_unsettled_key(tenant: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:unsettled"


def tenant_settling_key(tenant: str, occasion: str) -> str:
    return f"{TENANT_KEY_PREFIX}{tenant}:settling:{occasion}"


def batch_key(batch_id: str) -> str:
    return f"{BATCH_KEY_PREFIX}{batch_id}"


def batch_jobs_key(batch_id: str) -> str:
    return f"{BATCH_KEY_PREFIX}{batch_id}:jobs"


def idempotency_key(tenant: str | None, key: str) -> str:
    return f"{PREFIX}:idem:{tenant or '-'}:{key}"


def intake_reader_key(token: str) -> str:
    """The messages one reader of the plain intake has taken and not handled yet."""
    return f"{INTAKE_KEY}:reader:{token}"


def apikey_key(key_sha256: str) -> str:
    return f"{PREFIX}:apikey:{key_sha256}"


def console_session_key(token_sha256: str) -> str:
    return f"{PREFIX}:console:{token_sha256}"


def auth_failures_key(client: str) -> str:
    return f"{PREFIX}:authfail:{client}"


def endpoint_inflight_key(endpoint: str) -> str:
    """Deliveries in flight to one endpoint (``scheme://host:port``)."""
    return f"{PREFIX}:endpoint:{endpoint}:inflight"


def webhook_key(delivery_id: str) -> str:
    """The hash holding one webhook delivery."""
    return f"{WEBHOOK_KEY_PREFIX}{delivery_id}"


def parked_image_key(job_id: str) -> str:
    """Image bytes waiting for a successful S3 upload."""
    return f"{PREFIX}:job:{job_id}:parked-image"


class LimiterKeys(NamedTuple):
    """The keys of one quota (one region and model id)."""

    bucket: str
    calls: str
    throttles: str


def limiter_keys(region: str, model_id: str) -> LimiterKeys:
    base = f"{PREFIX}:limiter:{region}:{model_id}"
    return LimiterKeys(base, f"{base}:calls", f"{base}:throttles")


def pool_limiter_keys(pool: str, model_id: str) -> LimiterKeys:
    """The keys of one pool's quota of one model (its bucket also holds its circuit)."""
    return limiter_keys(f"pool:{pool}", model_id)


def pool_stats_key(pool: str, day: str) -> str:
    """One pool's calls, images, spend, throttles and errors of one UTC day (``YYYY-MM-DD``),
    per model: fields ``{what}|{model}``."""
    return f"{PREFIX}:pool-stats:{pool}:{day}"


class DispatchKeys(NamedTuple):
    """The dispatcher's keys of one model (the waiting sets: ``waiting_key``)."""

    tenants: str
    paused: str
    waiting: str
    weight: str
    finish: str
    delayed: str
    released: str
    active: str
    state: str


def dispatch_keys(model_id: str) -> DispatchKeys:
    base = f"{DISPATCH_PREFIX}{model_id}"
    return DispatchKeys(
        *(
            f"{base}:{name}"
            for name in (
                "tenants",
                "paused",
                "waiting",
                "weight",
                "finish",
                "delayed",
                "released",
                "active",
                "state",
            )
        )
    )


def waiting_key(model_id: str, tenant: str | None, priority: str) -> str:
    """One tenant's waiting jobs of one priority class for one model."""
    return f"{DISPATCH_PREFIX}{model_id}:wait:{tenant or NO_TENANT}:{priority}"


def waiting_since_key(model_id: str, priority: str) -> str:
    """Every waiting job of one model and class, by when it began to wait (ms)."""
    return f"{DISPATCH_PREFIX}{model_id}:since:{priority}"


def recent_waits_key(model_id: str) -> str:
    """``{tenant}|{ms waited}|{at ms}`` of the model's last jobs started, newest first."""
    return f"{DISPATCH_PREFIX}{model_id}:waits"


def quota_history_key(model_id: str) -> str:
    """The model's quota and backlog samples (``quota_history``), oldest first."""
    return f"{PREFIX}:history:{model_id}"


def quota_history_slot_key() -> str:
    """Held by whoever records the current interval's samples."""
    return f"{PREFIX}:history-slot"


def spend_key(tenant: str | None, period: str) -> str:
    """A tenant's spend ledger for one period (``d:YYYY-MM-DD`` or ``m:YYYY-MM``)."""
    return f"{SPEND_PREFIX}{tenant or NO_TENANT}:{period}"


def spend_days_key(tenant: str | None) -> str:
    return f"{SPEND_PREFIX}{tenant or NO_TENANT}:days"
