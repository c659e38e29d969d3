"""Re-creating the final records of jobs Redis lost, from their images in S3 (``imagegen
recover``).

A job's image is uploaded to ``{prefix}/{yyyy}/{mm}/{dd}/{job_id}.{ext}`` before Redis hears of
it, with its job's facts in the object's metadata (``imagegen.image_facts``). After Redis lost
data, each image of the last ``IMAGEGEN_JOB_RETENTION_S`` (or since ``--since``) is judged:

- ``recreate``: its job has no record, and the object proves the job: the facts are there, name
  the job id of the key, were created on the key's day, and a tenant's own id (``{tenant}.{id}``)
  carries that tenant. Its ``succeeded`` record is re-created (``JobStore.recover``: model,
  tenant, priority, seed, image, creation time; the request and metadata are not in S3, so they
  stay empty) and filed in its tenant's listings; its webhook's deliveries are queued and signed
  as at any finish, but only to a URL the service still holds (the tenant's webhook, or
  ``IMAGEGEN_WEBHOOK_DEFAULT_URL``) whose digest is the one the facts keep: a URL is never read
  from S3. A delivery's webhook-id is the one the lost job's delivery had, so a receiver that
  already has it can tell.
- ``has_record``: its job has a record (nothing to do);
- ``unproven``: the facts are missing (an image stored before they were kept) or disagree with
  the key; reported, never re-created.

Nothing changes without ``apply``; a record is re-created only where none exists, so running it
again re-creates nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from imagegen.ids import is_stored_job_id
from imagegen.image_facts import JobFacts, RecoveredJob, url_digest
from imagegen.records import JobStatus, ms_to_datetime
from imagegen.store.job_index import FiledJob, JobIndex

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from imagegen.settings import Settings
    from imagegen.store.jobs import JobStore
    from imagegen.store.tenants import Tenants

__all__ = ["Finding", "Recovery", "Verdict"]

_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
_KEY_TAIL = re.compile(r"(?P<day>\d{4}/\d{2}/\d{2})/(?P<job_id>[^/]+)\.(?P<ext>png|jpg|webp)$")
_IMAGE_FACTS = ("width", "height", "sha256")  # the object metadata an image needs


class Verdict(StrEnum):
    RECREATE = "recreate"
    HAS_RECORD = "has_record"
    UNPROVEN = "unproven"


@dataclass(frozen=True)
class Finding:
    """One image in S3 and what it allows."""

    key: str
    job_id: str
    verdict: Verdict
    reason: str = ""
    # The record to re-create (``recreate`` only), and why no webhook goes with it.
    job: RecoveredJob | None = None
    webhook_note: str = ""

    @property
    def tenant(self) -> str | None:
        return self.job.facts.tenant if self.job else None

    @property
    def webhook_url(self) -> str:
        return (self.job.webhook_url or "") if self.job else ""

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "s3_key": self.key,
            "verdict": self.verdict.value,
            "reason": self.reason or None,
            "tenant": self.tenant,
            "webhook_url": self.webhook_url or None,
            "webhook_note": self.webhook_note or None,
        }


class Recovery:
    """Judges the images in S3 against the records in Redis, and re-creates what is proven."""

    def __init__(
        self, settings: Settings, *, jobs: JobStore, tenants: Tenants, s3: S3Client
    ) -> None:
        self._settings = settings
        self._jobs = jobs
        self._tenants = tenants
        self._s3 = s3
        self._bucket = settings.s3_bucket
        self._prefix = settings.s3_prefix.strip("/")
        self._index = JobIndex(jobs.redis, settings.job_retention_s)

    def default_since_ms(self, now_ms: int) -> int:
        """How far back a record can have been lost: the job retention."""
        return now_ms - self._settings.job_retention_s * 1000

    def scan(self, since_ms: int, *, tenant: str | None = None) -> Iterator[Finding]:
        """Every image stored since ``since_ms`` (day by day, oldest first), judged; with
        ``tenant``, only that tenant's."""
        day = ms_to_datetime(since_ms).date()
        today = datetime.now(UTC).date()
        while day <= today:
            for key, size, modified_ms in self._objects(day.strftime("%Y/%m/%d")):
                finding = self.judge(key, size, modified_ms)
                if finding is None or (tenant is not None and finding.tenant != tenant):
                    continue
                yield finding
            day += timedelta(days=1)

    def apply(self, finding: Finding) -> bool:
        """Re-create the finding's record; False when it has one by now."""
        job = finding.job
        if finding.verdict is not Verdict.RECREATE or job is None:
            return False
        recreated = self._jobs.recover(job)
        tenant = job.facts.tenant
        if recreated and tenant:
            filed = FiledJob(
                job_id=finding.job_id,
                tenant=tenant,
                model_id=job.facts.model_id,
                created_ms=job.facts.created_ms,
                prompt="",
                final_status=JobStatus.SUCCEEDED.value,
            )
            self._index.file_new([filed])
        return recreated

    # -- judging one image -------------------------------------------------------------------

    def judge(self, key: str, size: int, modified_ms: int) -> Finding | None:
        """What one object allows (None: not an image of a job)."""
        match = _KEY_TAIL.search(key)
        if match is None or key != self._image_key(match["day"], match["job_id"], match["ext"]):
            return None
        job_id = match["job_id"]
        if self._jobs.exists(job_id):
            return Finding(key, job_id, Verdict.HAS_RECORD)
        metadata = self._s3.head_object(Bucket=self._bucket, Key=key).get("Metadata", {})
        facts = JobFacts.from_metadata(metadata)
        problem = _problem(facts, metadata, job_id, match["day"])
        if facts is None or problem:
            return Finding(key, job_id, Verdict.UNPROVEN, reason=problem)
        webhook_url, webhook_note = self._webhook(facts)
        seed = metadata.get("seed")
        job = RecoveredJob(
            facts=facts,
            bucket=self._bucket,
            key=key,
            content_type=_CONTENT_TYPES[match["ext"]],
            bytes=size,
            width=int(metadata["width"]),
            height=int(metadata["height"]),
            sha256=metadata["sha256"],
            seed=int(seed) if seed else None,
            finished_ms=modified_ms,
            webhook_url=webhook_url or None,
        )
        return Finding(key, job_id, Verdict.RECREATE, job=job, webhook_note=webhook_note)

    def _webhook(self, facts: JobFacts) -> tuple[str, str]:
        """The URL the job's webhook went to, when the service still holds it (the tenant's,
        or the default); otherwise '' and why."""
        if not facts.webhook_sha256:
            return "", ""
        if "job.succeeded" not in facts.webhook_events:
            return "", "its webhook does not take job.succeeded"
        held = [
            self._tenants.webhook_url(facts.tenant) if facts.tenant else None,
            self._settings.webhook_default_url,
        ]
        for url in held:
            if url and url_digest(url) == facts.webhook_sha256:
                return url, ""
        return "", (
            "its webhook URL is neither the tenant's nor IMAGEGEN_WEBHOOK_DEFAULT_URL now, and "
            "a URL is never taken from S3: no webhook"
        )

    def _image_key(self, day: str, job_id: str, ext: str) -> str:
        head = f"{self._prefix}/" if self._prefix else ""
        return f"{head}{day}/{job_id}.{ext}"

    def _objects(self, day: str) -> Iterator[tuple[str, int, int]]:
        head = f"{self._prefix}/" if self._prefix else ""
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=f"{head}{day}/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                modified = item["LastModified"]
                yield item["Key"], int(item["Size"]), round(modified.timestamp() * 1000)


def _problem(facts: JobFacts | None, metadata: dict[str, str], job_id: str, day: str) -> str:
    """Why the object does not prove its job ('' when it does)."""
    if facts is None:
        return "the object keeps no job facts (stored before they were kept, or not by a worker)"
    seed = metadata.get("seed", "")
    checks = (
        (
            facts.job_id == job_id and is_stored_job_id(job_id),
            f"the object's metadata names job {facts.job_id!r}, not the key's",
        ),
        (
            ms_to_datetime(facts.created_ms).strftime("%Y/%m/%d") == day,
            "the job's creation time is not the key's day",
        ),
        (
            "." not in job_id or bool(facts.tenant and job_id.startswith(f"{facts.tenant}.")),
            "a tenant's own job id without that tenant",
        ),
        (
            all(metadata.get(name, "").isalnum() for name in _IMAGE_FACTS)
            and metadata["width"].isdigit()
            and metadata["height"].isdigit(),
            "the object's metadata lacks the image's size or sha256",
        ),
        (not seed or seed.isdigit(), "the object's metadata gives no usable seed"),
    )
    return next((problem for holds, problem in checks if not holds), "")
