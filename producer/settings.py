"""Every setting of the service, in one pydantic-settings model.

Values come from the environment (prefix ``IMAGEGEN_``), then from an optional ``.env`` file,
then from the defaults below. The defaults run the embedded local stack; pointing at AWS is a
settings change only: unset ``IMAGEGEN_BEDROCK_ENDPOINT_URL`` and ``IMAGEGEN_S3_ENDPOINT_URL``,
set ``IMAGEGEN_S3_BUCKET`` and ``IMAGEGEN_AWS_REGION``; credentials come from the standard AWS
chain. The README's settings table is checked against this model by the tests.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_MODEL_ID", "Settings", "get_settings"]

DEFAULT_MODEL_ID = "stability.stable-image-core-v1:0"
STABILITY_IMAGE_MODEL_IDS = (
    "stability.stable-image-core-v1:0",
    "stability.stable-image-core-v1:1",
    "stability.stable-image-ultra-v1:0",
    "stability.stable-image-ultra-v1:1",
)
SECONDS_PER_DAY = 86_400

PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Configuration shared by the producer, the worker and the tools."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGEGEN_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # Redis: broker, job records and every shared counter.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis for the queues and the job records.",
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
        default=STABILITY_IMAGE_MODEL_IDS,
        description="Model ids a job may ask for (JSON list in the environment).",
    )
    bedrock_connect_timeout_s: PositiveSeconds = Field(
        default=5.0, description="TCP connect timeout for one Bedrock call."
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
    worker_pool: str = Field(
        default="threads",
        pattern=r"^(threads|prefork|solo|gevent|eventlet)$",
        description="Celery pool; threads suits calls that wait on the network.",
    )
    task_soft_time_limit_s: PositiveSeconds = Field(
        default=240.0, description="Soft time limit per task (enforced by the prefork pool)."
    )
    task_time_limit_s: PositiveSeconds = Field(
        default=300.0,
        description="Hard time limit per task; also the lease a running job holds.",
    )
    visibility_timeout_s: int = Field(
        default=3600,
        gt=0,
        description="Seconds before Redis redelivers an unacknowledged message; must exceed "
        "the hard time limit plus the longest retry delay.",
    )
    redelivery_sweep_s: int = Field(
        default=10,
        gt=0,
        description="How often each worker looks for messages past their visibility timeout "
        "(left by a worker that died) and puts them back on their queue.",
    )

    # Logging.
    log_level: str = Field(
        default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level."
    )

    @model_validator(mode="after")
    def _check_timing(self) -> Self:
        single_call_s = (
            self.bedrock_connect_timeout_s
            + self.bedrock_read_timeout_s
            + self.s3_upload_attempts * (self.s3_connect_timeout_s + self.s3_read_timeout_s)
        )
        if self.task_time_limit_s < single_call_s:
            msg = (
                f"task_time_limit_s ({self.task_time_limit_s:g}) must cover one Bedrock call "
                f"and the S3 uploads ({single_call_s:g} s with the configured timeouts)"
            )
            raise ValueError(msg)
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            msg = "task_soft_time_limit_s must be below task_time_limit_s"
            raise ValueError(msg)
        longest_hold_s = self.task_time_limit_s + self.retry_cap_s
        if self.visibility_timeout_s <= longest_hold_s:
            msg = (
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed "
                f"task_time_limit_s + retry_cap_s ({longest_hold_s:g}), or Redis redelivers "
                "messages that are still being worked on"
            )
            raise ValueError(msg)
        if self.model_id not in self.allowed_model_ids:
            msg = f"model_id {self.model_id!r} is not in allowed_model_ids"
            raise ValueError(msg)
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
