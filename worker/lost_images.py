"""A job submitted again after Redis lost its first record: its image may be in S3 already.

A lost job's image stays in S3 under ``{prefix}/{yyyy}/{mm}/{dd}/{job_id}.{ext}``, dated by the
lost record's creation. When Redis recorded a loss (``imagegen.epoch``) within the job retention,
the first attempt of a job whose id its caller chose (the same tenant's id again, or an id
without a tenant) looks for an image under that id on each day from a retention before the loss
to the loss, newest first, and adopts one whose facts (``imagegen.image_facts``) say the same
tenant, model and request, instead of buying it again. A job whose id the service minted at its
submission (a ULID of its own creation time) had no earlier life: it never looks. Looking is best
effort: S3 failing it means the job calls Bedrock as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from imagegen.epoch import read_found
from imagegen.errors import StorageError
from imagegen.ids import minted_ms
from imagegen.image_facts import JobFacts
from imagegen.records import JobRecord, ms_to_datetime
from worker import metrics
from worker.storage import StoredImage, find_stored_image, image_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from redis import Redis

    from imagegen.settings import Settings

__all__ = ["LOSS_REFRESH_S", "LostImages"]

log = logging.getLogger("imagegen.job")

# How long a worker trusts what it last read of Redis's last loss.
LOSS_REFRESH_S = 10.0
_DAY_MS = 86_400_000


class LostImages:
    """Finds the image a lost record's job stored, for the same job submitted again."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._prefix = settings.s3_prefix
        self._bucket = settings.s3_bucket
        self._retention_ms = settings.job_retention_s * 1000
        self._lock = threading.Lock()
        self._lost_at_ms = 0
        self._read_at = float("-inf")

    def lost_at_ms(self) -> int:
        """When Redis last lost data, as it records (0: never); read again every
        ``LOSS_REFRESH_S``."""
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < LOSS_REFRESH_S:
                return self._lost_at_ms
            self._read_at = now
        try:
            lost_at_ms = read_found(self._redis).lost_at_ms
        except RedisError:
            return self._lost_at_ms
        with self._lock:
            self._lost_at_ms = lost_at_ms
        return lost_at_ms

    def recent(self) -> bool:
        """Redis recorded a loss within the job retention: a first attempt may find its job's
        image in S3 (``find``) before it calls Bedrock."""
        lost_at_ms = self.lost_at_ms()
        return bool(lost_at_ms) and time.time() * 1000 - lost_at_ms <= self._retention_ms

    def candidate_keys(self, record: JobRecord, image_format: str) -> list[str]:
        """Where an earlier life of this job may have stored its image, newest day first
        (none: no loss within the retention, or an id minted for this job)."""
        created_ms = round(record.created_at.timestamp() * 1000)
        if minted_ms(record.job_id) == created_ms:
            return []
        lost_at_ms = self.lost_at_ms()
        if not lost_at_ms or created_ms - lost_at_ms > self._retention_ms:
            return []
        last = ms_to_datetime(min(lost_at_ms, created_ms)).date()
        first = ms_to_datetime(lost_at_ms - self._retention_ms).date()
        keys = []
        day = last
        while day >= first:
            when = datetime(day.year, day.month, day.day, tzinfo=UTC)
            keys.append(image_key(self._prefix, record.job_id, when, image_format))
            day -= timedelta(days=1)
        return keys

    def find(
        self, s3: S3Client, record: JobRecord, image_format: str
    ) -> tuple[str, StoredImage] | None:
        """The key and image of this job's earlier life, if one is in S3 and asked for the
        same; None otherwise (and when S3 cannot tell)."""
        keys = self.candidate_keys(record, image_format)
        if not keys:
            return None
        wanted = JobFacts.of(record)
        for key in keys:
            try:
                stored = find_stored_image(s3, self._bucket, key, record.job_id)
            except StorageError as e:
                log.warning(
                    "cannot look for a lost job's image; calling Bedrock",
                    extra={"job_id": record.job_id, "error": str(e)[:200]},
                )
                return None
            if stored is None:
                continue
            if stored.facts is not None and stored.facts.same_job(wanted):
                metrics.LOST_IMAGES_ADOPTED.inc()
                return key, stored
            log.info(
                "a lost job's image under this id asked for something else; not adopted",
                extra={"job_id": record.job_id, "s3_key": key},
            )
        return None
