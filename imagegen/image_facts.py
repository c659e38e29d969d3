"""What each image in S3 says of its job (the object's metadata), so the job can be matched back
to it after Redis lost the job's record.

The worker writes them with the image: the job id, model, seed, size and sha256 (what a re-run
adopts), and the job's tenant, creation time, priority, a digest of its request and of its
webhook URL, its webhook's events, and its Idempotency-Key with the digest of the submission it
stands for. Never the webhook URL itself: object metadata travels with every presigned GET of
the image, and a URL read back from S3 could be anybody's. ``imagegen recover``
(``producer.recover``) re-creates a lost job's final record from them (and its Idempotency-Key),
and sends its webhook only to a URL the service still holds (the tenant's, or the default) whose
digest matches. A job submitted again after the loss (``worker.lost_images``) adopts its image
when the tenant, model and request digest match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from imagegen.contract import AnyModelRequest
from imagegen.records import JobRecord

__all__ = ["JobFacts", "RecoveredJob", "request_digest", "url_digest"]


def request_digest(model_id: str, request: AnyModelRequest | None) -> str:
    """What a job asked for: its model and its whole request, as stored."""
    body = request.model_dump_json() if request is not None else ""
    return hashlib.sha256(f"{model_id}\n{body}".encode()).hexdigest()


def url_digest(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


@dataclass(frozen=True)
class JobFacts:
    """The job an image belongs to, as its S3 object's metadata keeps it."""

    job_id: str
    model_id: str
    tenant: str | None
    created_ms: int
    priority: str
    request_sha256: str
    # The digest of the job's webhook URL ('' without a webhook) and the events it takes.
    webhook_sha256: str = ""
    webhook_events: tuple[str, ...] = ()
    # Its Idempotency-Key and the digest of the submission that key stands for.
    idempotency: tuple[str, str] | None = None

    @classmethod
    def of(cls, record: JobRecord, idempotency: tuple[str, str] | None = None) -> JobFacts:
        url = record.webhook_url
        return cls(
            job_id=record.job_id,
            model_id=record.model_id,
            tenant=record.tenant,
            created_ms=round(record.created_at.timestamp() * 1000),
            priority=record.priority,
            request_sha256=request_digest(record.model_id, record.request),
            webhook_sha256=url_digest(url) if url else "",
            webhook_events=tuple(record.webhook_events) if url else (),
            idempotency=idempotency,
        )

    def metadata(self) -> dict[str, str]:
        """The object metadata these facts are kept as (beside the image's own)."""
        return {
            "job-id": self.job_id,
            "model-id": self.model_id,
            "tenant": self.tenant or "",
            "created-ms": str(self.created_ms),
            "priority": self.priority,
            "request-sha256": self.request_sha256,
            "webhook-sha256": self.webhook_sha256,
            "webhook-events": ",".join(self.webhook_events),
            # Percent-encoded: metadata is ASCII, a key may be any string.
            "idempotency-key": quote(self.idempotency[0], safe="") if self.idempotency else "",
            "idempotency-sha256": self.idempotency[1] if self.idempotency else "",
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> JobFacts | None:
        """The facts an object keeps; None for one written before they were kept (or not by
        the worker)."""
        if not all(metadata.get(name) for name in ("job-id", "model-id", "created-ms")):
            return None
        if not metadata.get("request-sha256") or not metadata["created-ms"].isdigit():
            return None
        key, key_sha256 = metadata.get("idempotency-key"), metadata.get("idempotency-sha256")
        return cls(
            job_id=metadata["job-id"],
            model_id=metadata["model-id"],
            tenant=metadata.get("tenant") or None,
            created_ms=int(metadata["created-ms"]),
            priority=metadata.get("priority") or "interactive",
            request_sha256=metadata["request-sha256"],
            webhook_sha256=metadata.get("webhook-sha256", ""),
            webhook_events=tuple(e for e in metadata.get("webhook-events", "").split(",") if e),
            idempotency=(unquote(key), key_sha256) if key and key_sha256 else None,
        )

    def same_job(self, other: JobFacts) -> bool:
        """Whether ``other`` asks for exactly what these facts' job asked for, as its tenant."""
        return (
            self.tenant == other.tenant
            and self.model_id == other.model_id
            and self.request_sha256 == other.request_sha256
        )


@dataclass(frozen=True)
class RecoveredJob:
    """A lost job's final record, as far as its image in S3 proves it."""

    facts: JobFacts
    bucket: str
    key: str
    content_type: str
    bytes: int
    width: int
    height: int
    sha256: str
    seed: int | None
    # When it finished: its image's upload (Unix ms).
    finished_ms: int
    # Where its webhook goes: a URL the service holds whose digest the facts keep (None: none).
    webhook_url: str | None = None
