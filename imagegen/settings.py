"""Every setting of the service, in one pydantic-settings model.

Values come from the environment (prefix ``IMAGEGEN_``), then from an optional ``.env`` file,
then from the defaults below. The defaults run the embedded local stack; pointing at AWS is a
settings change only: unset ``IMAGEGEN_BEDROCK_ENDPOINT_URL`` and ``IMAGEGEN_S3_ENDPOINT_URL``,
set ``IMAGEGEN_S3_BUCKET`` and ``IMAGEGEN_AWS_REGION``; credentials come from the standard AWS
chain. The settings table in docs/settings.md is checked against this model by the tests.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imagegen.models import DEFAULT_MODEL_ID, MODELS
from imagegen.pools import DEFAULT_POOL, Pool, PoolSpec
from imagegen.redis.urls import check_redis_url
from imagegen.store.signing import secret_problem

__all__ = ["DEFAULT_MODEL_ID", "SECONDS_PER_DAY", "ModelLimit", "Settings", "get_settings"]

SECONDS_PER_DAY = 86_400
MIN_PASSWORD_CHARS = 12
MIN_ADMIN_TOKEN_CHARS = 24
# Redis connections an API process keeps for ordinary requests beside streams and waits.
API_SPARE_CONNECTIONS = 16

PositiveSeconds = Annotated[float, Field(gt=0)]


class ModelLimit(BaseModel):
    """The Bedrock quota of one model in one region, as the fleet should use it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: float = Field(ge=0, description="requests per minute; 0 = no limit")
    burst: float = Field(default=1.0, ge=1, description="calls that may start at once")
    max_concurrency: int = Field(default=0, ge=0, description="calls in flight; 0 = no cap")


class Settings(BaseSettings):
    """Configuration shared by the producer, the worker and the tools."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGEN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        # An error names the setting and what is wrong, never the value (a URL's password).
        hide_input_in_errors=True,
    )

    # Redis: broker, job records and every shared counter.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis for the queues and the job records: redis://, rediss:// (TLS), "
        "unix://, or a primary Sentinel manages: redis+sentinel://[:password@]host:26379,"
        "host:26380/mymaster/0 (rediss+sentinel:// for TLS).",
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description="Password of the Sentinels themselves (redis+sentinel:// URLs); unset means "
        "they ask for none.",
    )
    redis_replica_ack: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Before answering for a write (a job accepted, a final status, a delivery "
        "queued), wait until a replica has it (WAIT): on, off, or auto (on while the primary "
        "reports a connected replica).",
    )
    redis_replica_ack_timeout_s: PositiveSeconds = Field(
        default=1.0,
        description="How long such a write waits for a replica before it is refused as "
        "retryable (503); at most half of redis_socket_timeout_s.",
    )
    redis_tls_ca_file: str | None = Field(
        default=None,
        description="CA bundle that signs the Redis server's certificate (rediss:// URLs); unset "
        "means the system's.",
    )
    redis_connect_timeout_s: PositiveSeconds = Field(
        default=5.0, description="TCP connect timeout for every Redis connection."
    )
    redis_socket_timeout_s: PositiveSeconds = Field(
        default=10.0,
        description="Read timeout for every Redis command (longer than the broker's 1 s poll).",
    )
    redis_health_check_interval_s: int = Field(
        default=30,
        ge=0,
        description="An idle Redis connection is pinged before use after this long (0: never).",
    )
    redis_max_connections: int = Field(
        default=64, ge=2, le=10_000, description="Redis connections one process's pool may open."
    )
    redis_pool_timeout_s: PositiveSeconds = Field(
        default=5.0,
        description="How long a caller waits for a free pooled Redis connection before an error.",
    )

    # Bedrock.
    aws_region: str = Field(default="us-west-2", description="AWS region for Bedrock and S3.")
    bedrock_endpoint_url: str | None = Field(
        default=None,
        description="bedrock-runtime endpoint; unset means AWS itself. The local stack sets it "
        "to the emulator.",
    )
    model_id: str = Field(
        default=DEFAULT_MODEL_ID, description="Model used when a job does not name one."
    )
    allowed_model_ids: tuple[str, ...] = Field(
        default=tuple(MODELS),
        description="Model ids a job may ask for (JSON list in the environment).",
    )
    bedrock_connect_timeout_s: PositiveSeconds = Field(
        default=5.0, description="TCP connect timeout for one Bedrock call."
    )
    pools: tuple[PoolSpec, ...] = Field(
        default=(),
        description='Bedrock pools (accounts and Regions), JSON: [{"name": "a", "region": '
        '"us-west-2", "models": ["stability.stable-image-core-v1:1"], "rpm": 600, "profile": '
        '"acct-a"}, {"name": "b", ..., "role_arn": "arn:aws:iam::123456789012:role/imagegen"}]; '
        "each has its own quota, token bucket and circuit. A model no pool names is served by "
        "the implicit pool (aws_region, bedrock_endpoint_url, the standard credentials).",
    )
    pool_choice: Literal["least_used", "cheapest"] = Field(
        default="least_used",
        description="Which of a model's pools with a token a released job goes to: the one "
        "with the fewest calls over the last minute for its quota, or the cheapest.",
    )
    pool_circuit_open_s: PositiveSeconds = Field(
        default=60.0,
        description="How long a pool that answered access denied, no subscription or no such "
        "model gets no calls before one probe.",
    )
    pool_circuit_failures: int = Field(
        default=5,
        ge=1,
        description="A pool whose calls failed this many times in a row (5xx, timeouts) gets "
        "no calls for pool_circuit_open_s, then one probe.",
    )
    sts_endpoint_url: str | None = Field(
        default=None,
        description="STS endpoint for the pools' AssumeRole calls; unset means AWS itself.",
    )
    bedrock_read_timeout_s: PositiveSeconds = Field(
        default=60.0, description="Read timeout for one Bedrock call (a generation takes seconds)."
    )

    # S3.
    s3_bucket: str = Field(
        default="imagegen-images", min_length=3, description="Bucket the images are written to."
    )
    s3_prefix: str = Field(
        default="images", description="Key prefix: keys are {prefix}/{yyyy}/{mm}/{dd}/{job}.{ext}."
    )
    uploads_prefix: str = Field(
        default="uploads",
        min_length=1,
        description="Key prefix of input images uploaded through the API: "
        "{prefix}/{tenant}/{id}.{ext} in s3_bucket; a tenant may use only its own.",
    )
    upload_url_ttl_s: int = Field(
        default=900, ge=60, le=7 * SECONDS_PER_DAY, description="Life of a presigned upload URL."
    )
    input_s3_prefixes: tuple[str, ...] = Field(
        default=(),
        description="Where else any tenant's input images may come from (JSON list of "
        '"bucket/prefix"); the worker role needs s3:GetObject there.',
    )
    input_image_max_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="Largest input image a job may name (checked before it is queued).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint; unset means AWS. The local stack sets moto's."
    )
    s3_connect_timeout_s: PositiveSeconds = Field(default=5.0, description="S3 connect timeout.")
    s3_read_timeout_s: PositiveSeconds = Field(default=30.0, description="S3 read timeout.")
    s3_upload_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Upload tries inside one job attempt before the "
        "image is parked in Redis and the attempt is retried (the image is never bought twice).",
    )

    # Jobs.
    job_retention_s: int = Field(
        default=7 * SECONDS_PER_DAY,
        gt=0,
        description="How long a job record is kept after its last change.",
    )
    metadata_max_bytes: int = Field(
        default=2048,
        gt=0,
        le=65_536,
        description="Largest caller metadata object (JSON, UTF-8 bytes) echoed back on the job.",
    )
    max_attempts: int = Field(
        default=5, ge=1, le=50, description="Bedrock attempts per job before it fails."
    )
    retry_base_s: PositiveSeconds = Field(
        default=1.0, description="First retry delay ceiling; doubles per attempt (full jitter)."
    )
    retry_cap_s: PositiveSeconds = Field(default=60.0, description="Largest retry delay.")

    # Worker.
    worker_concurrency: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Threads per worker process: about (requests per second) x (call latency).",
    )
    worker_pool: Literal["threads", "prefork", "solo"] = Field(
        default="threads",
        description="Celery pool; threads suits calls that wait on the network.",
    )
    task_soft_time_limit_s: PositiveSeconds = Field(
        default=240.0, description="Soft time limit per task (enforced by the prefork pool)."
    )
    task_time_limit_s: PositiveSeconds = Field(
        default=300.0,
        description="Hard time limit per task; also the lease a running job holds.",
    )
    # The shared rate limiter (one token bucket per region and model, in Redis).
    rate_limit_rpm: float = Field(
        default=60.0,
        ge=0,
        description="Bedrock requests per minute the whole fleet may make per model; set it to "
        "your account's quota. 0 turns the limiter off.",
    )
    rate_limit_burst: float = Field(
        default=1.0, ge=1, description="Calls that may start at once after a quiet spell."
    )
    max_concurrency: int = Field(
        default=0,
        ge=0,
        description="Jobs of one model released or running across the fleet; 0 = no cap.",
    )
    model_limits: dict[str, ModelLimit] = Field(
        default_factory=dict,
        description='Per-model overrides, JSON: {"model id": {"rpm": 30, "burst": 2, '
        '"max_concurrency": 8}}.',
    )
    rate_floor_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="After throttling, the shared rate never drops below this part of the quota.",
    )
    rate_decrease_factor: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="On a ThrottlingException the shared rate is multiplied by this.",
    )
    rate_increase_fraction: float = Field(
        default=0.001,
        gt=0,
        le=1,
        description="Each successful call raises the shared rate by this part of the quota.",
    )
    rate_decrease_cooldown_s: float = Field(
        default=2.0,
        ge=0,
        description="Throttles within this long of a decrease count as the same event.",
    )

    # The dispatcher: jobs wait in Redis and are released at the quota's rate, fairly.
    dispatch_lookahead_s: PositiveSeconds = Field(
        default=2.0,
        description="Released jobs not yet taken by a worker stay within this many seconds of "
        "the model's rate; the rest wait in Redis.",
    )
    dispatch_batch_every: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="Within a tenant, interactive jobs go first, but after this many in a row "
        "while batch jobs wait, one batch job goes.",
    )
    dispatch_redrive_grace_s: PositiveSeconds = Field(
        default=60.0,
        description="A released job no worker claimed within this long (its message went with "
        "a dead worker) is put back to wait for its turn.",
    )
    dispatch_interval_s: PositiveSeconds = Field(
        default=1.0,
        description="Longest sleep of a worker's release loop when nothing tells it sooner (a "
        "submission, a finished job, a token or retry due); also how often each worker reads "
        "the plain intake.",
    )
    tenant_weights: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description='Tenants\' weights in the fair share, JSON: {"acme": 2}; 1 for the rest. '
        "A weight set with `imagegen tenants set` or the admin API wins.",
    )
    tenant_rate_limit_rpm: float = Field(
        default=0.0, ge=0, description="Jobs per minute one tenant may start; 0 = no cap."
    )
    tenant_max_concurrency: int = Field(
        default=0, ge=0, description="Jobs one tenant may have released or running; 0 = no cap."
    )
    celery_rate_limit: str | None = Field(
        default=None,
        pattern=r"^\d+(\.\d+)?/[smh]$",
        description="Celery's own per-process rate_limit on the generate task (for "
        "comparisons; it cannot share a quota across processes).",
    )
    bedrock_botocore_retries: Literal["off", "standard", "adaptive"] = Field(
        default="off",
        description="botocore's own retry mode for Bedrock (for comparisons; off lets our "
        "policy own retries and never re-runs a billed generation behind its back).",
    )

    # Submitting (the HTTP API and the client).
    max_queued_total: int = Field(
        default=100_000,
        gt=0,
        description="Jobs not yet finished (waiting, released or running), all tenants; "
        "beyond, 429.",
    )
    max_queued_per_tenant: int = Field(
        default=10_000,
        gt=0,
        description="Jobs not yet finished for one tenant; beyond, 429.",
    )
    max_batch_size: int = Field(default=10_000, gt=0, description="Most jobs in one batch.")
    api_max_body_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Largest request body the API reads; 413."
    )
    api_max_wait_s: float = Field(
        default=30.0, ge=0, le=300, description="Longest `Prefer: wait=N` the API honours."
    )
    api_auth_failures_per_minute: int = Field(
        default=10,
        gt=0,
        description="Bad API keys one client address, or one key id, may present in a minute "
        "before 429 (a valid key is always accepted).",
    )
    api_max_streams_per_tenant: int = Field(
        default=4, ge=1, description="Event streams one tenant may hold open on one API process."
    )
    api_max_streams_total: int = Field(
        default=24, ge=1, description="Event streams one API process holds open in all; 429 beyond."
    )
    api_max_waiting_per_tenant: int = Field(
        default=4,
        ge=1,
        description="`Prefer: wait` requests one tenant may have waiting on one API process; "
        "beyond, the job is answered at once (202).",
    )
    api_max_waiting_total: int = Field(
        default=24, ge=1, description="`Prefer: wait` requests one API process keeps waiting."
    )
    image_url_ttl_s: int = Field(
        default=900,
        ge=60,
        le=7 * SECONDS_PER_DAY,
        description="Life of the presigned image URLs the API gives (image_url in job records, "
        "chains and uploads, and the redirect of GET /v1/jobs/{id}/image); each read signs a "
        "fresh one.",
    )
    api_image_delivery: Literal["redirect", "stream"] = Field(
        default="redirect",
        description="How the API hands out images: redirect (presigned S3 URLs) or stream (GET "
        "/v1/jobs/{id}/image sends the bytes itself, and image_url names that path), for "
        "callers that cannot reach S3.",
    )
    api_trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="Proxies (addresses or CIDR blocks, JSON list) whose X-Forwarded-For names "
        "the real client, and whose X-Forwarded-Proto and X-Forwarded-Host name the address "
        "the browser used; from anyone else those headers are ignored.",
    )
    api_max_header_bytes: int = Field(
        default=16_384,
        ge=1_024,
        le=1_048_576,
        description="Largest request line and headers the API reads; beyond, 431 and the "
        "connection is closed.",
    )
    api_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Time a client has to send a request's line and headers, and the longest "
        "pause while it sends a body; beyond, the connection is closed.",
    )
    api_keep_alive_s: int = Field(
        default=5,
        ge=1,
        le=600,
        description="Time an idle keep-alive connection to the API stays open.",
    )
    api_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="API worker processes `imagegen api` and the local stack start; 0 = one per "
        "CPU this process may run on. Each process has its own Redis connections, threads and "
        "bounds on streams and waits; everything else (keys, brakes, limits, sessions) is in "
        "Redis, shared by all.",
    )
    console_secure_cookies: bool = Field(
        default=False,
        description="Mark the console's cookies Secure on every response (it is reached over "
        "https); otherwise only when a request came over https, directly or as "
        "X-Forwarded-Proto from IMAGEGEN_API_TRUSTED_PROXIES.",
    )
    console_trace_url: str | None = Field(
        default=None,
        description="A trace viewer's page of one trace, with {trace_id} where the id goes "
        "(http://jaeger:16686/trace/{trace_id}): the console's job page links the job's trace "
        "there. Unset: the page shows the trace id alone.",
    )

    # Webhooks.
    webhook_default_url: str | None = Field(
        default=None,
        description="Webhook endpoint for jobs that name none (a tenant's default wins).",
    )
    webhook_allow_http: bool = Field(
        default=False, description="Allow plain-http webhook URLs (https only otherwise)."
    )
    webhook_allowed_hosts: tuple[str, ...] = Field(
        default=(),
        description="Hosts a webhook may reach even on private or loopback addresses "
        '(JSON list, e.g. ["127.0.0.1"] for a local receiver).',
    )
    webhook_send_threads: int = Field(
        default=4,
        ge=0,
        le=256,
        description="Threads per worker process that send a finished job's webhooks at once, "
        "without a message on the webhooks queue (retries, and deliveries when they are all "
        "busy, go through the queue). 0 = always through the queue.",
    )
    webhook_max_in_flight_per_endpoint: int = Field(
        default=4,
        ge=0,
        description="Deliveries in flight at once to one endpoint (scheme, host and port) across "
        "the fleet; more wait a moment without using an attempt. 0 = no cap.",
    )
    webhook_allowed_ports: tuple[int, ...] = Field(
        default=(),
        description="Ports a webhook URL may name besides 443 (and 80 with plain http), JSON list.",
    )
    webhook_timeout_s: PositiveSeconds = Field(
        default=15.0,
        description="Time a receiver has to answer one delivery: connecting, sending and "
        "reading together.",
    )
    webhook_retry_schedule_s: tuple[float, ...] = Field(
        # Short steps first, so a receiver down for a minute costs seconds, not minutes.
        default=(0, 5, 30, 120, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400),
        min_length=1,
        description="Delay before each delivery attempt, the first included (JSON list).",
    )
    webhook_jitter_fraction: float = Field(
        default=0.1, ge=0, le=1, description="Random spread added to each retry delay."
    )
    webhook_presign_expiry_s: int = Field(
        default=3600,
        gt=0,
        le=7 * SECONDS_PER_DAY,
        description="Lifetime of the presigned image URL in a webhook.",
    )
    webhook_max_response_bytes: int = Field(
        default=4096, gt=0, description="Most of a receiver's answer that is read and logged."
    )
    webhook_handoff_grace_s: float = Field(
        default=30.0,
        gt=0,
        description="An outbox entry no delivery task picked up within this long is sent again "
        "by the sweeper.",
    )
    webhook_sweep_interval_s: float = Field(
        default=1.0, gt=0, description="How often the outbox sweeper looks for due deliveries."
    )
    webhook_secret_overlap_s: int = Field(
        default=SECONDS_PER_DAY,
        ge=0,
        description="After a rotation, the old signing secret also signs for this long.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="The signing secret of jobs without a tenant (whsec_ + base64 of 24+ "
        "bytes; `imagegen webhook-secret --generate` prints one); during a rotation several, "
        "space-separated, newest first. Unset: kept in Redis, made once by `imagegen "
        "webhook-secret --create`. Set, it survives anything Redis loses.",
    )

    # Operating: logs, metrics, Flower.
    log_level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level."
    )
    log_format: Literal["json", "text"] = Field(
        default="json", description="JSON lines for log pipelines, or key=value text."
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address a worker's /metrics listens on (0.0.0.0 where a scraper on another "
        "host needs it).",
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port a worker serves its Prometheus /metrics on (0: none).",
    )
    api_admin_token: SecretStr | None = Field(
        default=None,
        description="When set, /v1/admin/* (tenants' weights, caps and budgets) answers to "
        "Authorization: Bearer <this token>; unset, those routes do not exist (404).",
    )
    console_session_ttl_s: int = Field(
        default=8 * 3600,
        ge=60,
        le=30 * SECONDS_PER_DAY,
        description="How long a web console login lasts (a tenant's also ends when its API key "
        "is revoked).",
    )
    metrics_tenants_max: int = Field(
        default=100,
        ge=0,
        le=100_000,
        description="Per-tenant series on /metrics for at most this many tenants (the busiest "
        "per model, the most recently spending); the fleet's totals always count every tenant.",
    )
    api_metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, the API's /metrics needs Authorization: Bearer <this token>.",
    )
    model_prices_usd: dict[str, float] = Field(
        default_factory=lambda: {m.model_id: m.price_usd for m in MODELS.values()},
        description="Price of one generated image per model (JSON): what a job reserves of its "
        "tenant's budget when released, and what a bought image costs.",
    )
    filtered_images_billed: bool = Field(
        default=True,
        description="Whether an image Bedrock withheld by its filter ('Filter reason: output "
        "image') counts as spend.",
    )
    cache_ttl_s: int = Field(
        default=7 * SECONDS_PER_DAY,
        ge=0,
        description="How long an image bought for a fixed-seed job serves identical jobs from "
        "the cache (0: no cache).",
    )
    cache_copy_objects: bool = Field(
        default=False,
        description="A cache hit copies the image under the job's own key (a worker does it, "
        "without a Bedrock call) instead of pointing at the first job's object.",
    )
    spend_retention_days: int = Field(
        default=400,
        ge=1,
        le=3650,
        description="How long each day's and month's spend is kept after the day or month ends.",
    )
    flower_basic_auth: str | None = Field(
        default=None,
        pattern=r"^[^:]+:.+$",
        description="user:password for Flower; required unless flower_allow_no_auth.",
    )
    flower_allow_no_auth: bool = Field(
        default=False, description="Let Flower run without a password (only on localhost)."
    )

    @field_validator("console_trace_url")
    @classmethod
    def _check_console_trace_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("http://", "https://")) or "{trace_id}" not in url:
            msg = "must be an http(s) URL with {trace_id} where the trace id goes"
            raise ValueError(msg)
        return url

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str) -> str:
        check_redis_url(url)
        return url

    @model_validator(mode="after")
    def _check_timing(self) -> Self:
        single_call_s = (
            self.bedrock_connect_timeout_s
            + self.bedrock_read_timeout_s
            + self.s3_upload_attempts * (self.s3_connect_timeout_s + self.s3_read_timeout_s)
        )
        if self.task_time_limit_s < single_call_s:
            msg = (
                f"task_time_limit_s ({self.task_time_limit_s:g}) must cover one "
                f"Bedrock call and the S3 uploads ({single_call_s:g} s with these settings)"
            )
            raise ValueError(msg)
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            msg = "task_soft_time_limit_s must be below task_time_limit_s"
            raise ValueError(msg)
        admin = None if self.api_admin_token is None else self.api_admin_token.get_secret_value()
        if admin is not None and len(admin) < MIN_ADMIN_TOKEN_CHARS:
            msg = (
                f"api_admin_token needs {MIN_ADMIN_TOKEN_CHARS}+ characters (leave it unset for "
                "no admin API)"
            )
            raise ValueError(msg)
        if self.flower_basic_auth:
            password = self.flower_basic_auth.split(":", 1)[1]
            if len(password) < MIN_PASSWORD_CHARS or "change-me" in password.lower():
                msg = (
                    f"flower_basic_auth needs a real password ({MIN_PASSWORD_CHARS}+ "
                    "characters, not the example's)"
                )
                raise ValueError(msg)
        held = self.api_max_streams_total + self.api_max_waiting_total
        if held + API_SPARE_CONNECTIONS > self.redis_max_connections:
            msg = (
                f"api_max_streams_total + api_max_waiting_total ({held}) must leave "
                f"{API_SPARE_CONNECTIONS} of redis_max_connections ({self.redis_max_connections}) "
                "for other requests: each stream and wait holds a Redis connection"
            )
            raise ValueError(msg)
        if self.worker_pool == "prefork" and self.worker_metrics_port:
            msg = (
                "worker_metrics_port serves one process's metrics, and the prefork pool runs "
                "the tasks in child processes: use the threads pool, or set the port to 0"
            )
            raise ValueError(msg)
        schedule_s = sum(self.webhook_retry_schedule_s) + self.webhook_handoff_grace_s * len(
            self.webhook_retry_schedule_s
        )
        if self.job_retention_s <= schedule_s:
            msg = (
                f"job_retention_s ({self.job_retention_s}) must outlive the webhook retry "
                f"schedule ({schedule_s:g} s), or deliveries expire before their last try"
            )
            raise ValueError(msg)
        if self.webhook_secret is not None:
            _check_webhook_secret(self.webhook_secret.get_secret_value())
        if self.model_id not in self.allowed_model_ids:
            msg = f"model_id {self.model_id!r} is not in allowed_model_ids"
            raise ValueError(msg)
        self._check_pools()
        return self

    def _check_pools(self) -> None:
        names = [spec.name for spec in self.pools]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            msg = f"pools: names must be unique ({', '.join(twice)} more than once)"
            raise ValueError(msg)
        for spec in self.pools:
            unknown = [m for m in spec.models if m not in self.allowed_model_ids]
            if unknown:
                served = ", ".join(unknown)
                msg = f"pools: pool {spec.name!r} serves {served}, not in allowed_model_ids"
                raise ValueError(msg)

    def contract_context(self) -> dict[str, Any]:
        """What ``JobSpec.parse`` checks against: the allowed models, the metadata limit, and
        whether plain-http webhooks are allowed."""
        return {
            "default_model_id": self.model_id,
            "allowed_model_ids": self.allowed_model_ids,
            "metadata_max_bytes": self.metadata_max_bytes,
            "webhook_allow_http": self.webhook_allow_http,
        }

    def price_usd(self, model_id: str) -> float:
        """One image of ``model_id`` (0 for a model without a price)."""
        return self.model_prices_usd.get(model_id, 0.0)

    def api_processes(self) -> int:
        """How many API worker processes to run: ``api_workers``, or one per usable CPU."""
        return self.api_workers or usable_cpus()

    def limit_for(self, model_id: str) -> ModelLimit:
        """The quota the fleet uses for ``model_id``: with pools, the sum of theirs."""
        limit = self.model_limits.get(model_id) or ModelLimit(
            rpm=self.rate_limit_rpm,
            burst=self.rate_limit_burst,
            max_concurrency=self.max_concurrency,
        )
        pools = self.configured_pools(model_id)
        if not pools:
            return limit
        return ModelLimit(
            rpm=sum(p.rpm for p in pools),
            burst=sum(p.burst for p in pools),
            max_concurrency=limit.max_concurrency,
        )

    def configured_pools(self, model_id: str) -> tuple[Pool, ...]:
        """The pools ``IMAGEGEN_POOLS`` names for ``model_id`` (none: the implicit pool)."""
        return tuple(Pool.of(spec) for spec in self.pools if model_id in spec.models)

    def pools_for(self, model_id: str) -> tuple[Pool, ...]:
        """The pools that serve ``model_id``: the configured ones, or the implicit one."""
        return self.configured_pools(model_id) or (self.implicit_pool(model_id),)

    def implicit_pool(self, model_id: str) -> Pool:
        """The pool of a model no configured pool serves: the service's Region, endpoint and
        credentials, with the model's quota."""
        limit = self.model_limits.get(model_id)
        return Pool(
            name=DEFAULT_POOL,
            region=self.aws_region,
            rpm=limit.rpm if limit else self.rate_limit_rpm,
            burst=limit.burst if limit else self.rate_limit_burst,
            endpoint_url=self.bedrock_endpoint_url,
        )

    def pool_price_usd(self, pool: Pool, model_id: str) -> float:
        """One image of ``model_id`` in ``pool``: its own price, else the model's."""
        return self.price_usd(model_id) if pool.price_usd is None else pool.price_usd

    def pool_names(self) -> list[str]:
        """Every pool's name, the implicit one last when some model is served by it."""
        names = [spec.name for spec in self.pools]
        if any(not self.configured_pools(m) for m in self.allowed_model_ids):
            names.append(DEFAULT_POOL)
        return names

    def pool_named(self, name: str, model_id: str) -> Pool | None:
        """The pool ``name`` as it serves ``model_id`` (None: it serves it not)."""
        return next((p for p in self.pools_for(model_id) if p.name == name), None)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_webhook_secret(value: str) -> None:
    secrets = value.split()
    if not secrets:
        msg = "webhook_secret is empty: unset it, or give a whsec_ secret"
        raise ValueError(msg)
    for position, secret in enumerate(secrets, 1):
        problem = secret_problem(secret)
        if problem is not None:
            msg = f"webhook_secret (secret {position} of {len(secrets)}) {problem}"
            raise ValueError(msg)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
