"""Images over HTTP: a link to each finished job's image (and to each upload), fresh on every
read, and ``GET /v1/jobs/{job_id}/image`` (``/v1/chains/{chain_id}/image`` for a chain's final
image).

With ``api_image_delivery = "redirect"`` (the default) a link is a presigned S3 GET that lives
``image_url_ttl_s``: a caller with no AWS credentials downloads it with a plain GET, and reads
the job again (or asks ``/image``, which redirects to a new one) when it has expired. With
``"stream"``, for callers that cannot reach S3, the API sends the bytes itself and ``image_url``
is the API's own path (``/v1/jobs/{job_id}/image``, fetched with the API key; it does not
expire). Either way only the job's tenant reaches it: for anyone else the job does not exist.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from imagegen.records import ChainStep, JobRecord, JobStatus
from imagegen.settings import Settings
from producer.api.problems import ProblemError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from producer.api.state import ApiState

__all__ = [
    "IF_NONE_MATCH_DESCRIPTION",
    "IMAGE_MEDIA_TYPES",
    "IMAGE_RESPONSES",
    "ImageLink",
    "ImageLinks",
    "has_image",
    "image_response",
    "job_image_path",
]

log = logging.getLogger("imagegen.api")

IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")
STREAM_CHUNK_BYTES = 64 * 1024
# A streamed image never changes once its job succeeded; the caller's own cache may keep it.
STREAM_CACHE_CONTROL = "private, max-age=3600"
STORAGE_RETRY_AFTER_S = 5
_MISSING_OBJECT = frozenset({"NoSuchKey", "NotFound", "404"})


@dataclass(frozen=True)
class ImageLink:
    """Where to GET an image, and until when (None: it does not expire)."""

    url: str
    expires_at: datetime | None


def job_image_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/image"


def has_image(record: JobRecord) -> bool:
    return record.status is JobStatus.SUCCEEDED and bool(record.s3_bucket and record.s3_key)


class ImageLinks:
    """Signs (or names) the links the API hands out; signing is local, no call to S3."""

    def __init__(self, settings: Settings, s3: Callable[[], S3Client]) -> None:
        self.settings = settings
        self._s3 = s3

    @property
    def streams(self) -> bool:
        return self.settings.api_image_delivery == "stream"

    def presigned(self, bucket: str, key: str) -> ImageLink:
        """A presigned GET for ``s3://bucket/key``; raises botocore's errors (no credentials)."""
        ttl_s = self.settings.image_url_ttl_s
        # Taken before signing, whole seconds: never later than the URL's real end.
        signed_at = math.floor(time.time())
        url = self._s3().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl_s
        )
        return ImageLink(url, datetime.fromtimestamp(signed_at + ttl_s, tz=UTC))

    def for_job(self, record: JobRecord) -> ImageLink | None:
        """The link to a job's image; None until it succeeded (or when signing fails: the
        record is still answered, and ``/image`` says what is wrong)."""
        if not has_image(record):
            return None
        if self.streams:
            return ImageLink(job_image_path(record.job_id), None)
        return self._signed(record.s3_bucket or "", record.s3_key or "")

    def for_step(self, step: ChainStep) -> ImageLink | None:
        """The link to a chain step's image (its record carries only the S3 URI)."""
        if step.status is not JobStatus.SUCCEEDED or not step.s3_uri:
            return None
        if self.streams:
            return ImageLink(job_image_path(step.job_id), None)
        bucket, _, key = step.s3_uri.removeprefix("s3://").partition("/")
        return self._signed(bucket, key) if bucket and key else None

    def for_upload(self, bucket: str, key: str) -> ImageLink | None:
        """The link to an uploaded input image: none when images are streamed (the caller
        cannot reach S3, and the API serves only jobs' images)."""
        return None if self.streams else self._signed(bucket, key)

    def _signed(self, bucket: str, key: str) -> ImageLink | None:
        try:
            return self.presigned(bucket, key)
        except (BotoCoreError, ClientError) as e:
            log.warning("cannot sign an image URL", extra={"error": str(e)})
            return None


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image itself, where the service streams images "
        "(`IMAGEGEN_API_IMAGE_DELIVERY=stream`)",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_MEDIA_TYPES
        },
        "headers": {
            "ETag": {"description": "The image's SHA-256, quoted", "schema": {"type": "string"}},
            "Content-Length": {"schema": {"type": "integer"}},
        },
    },
    302: {
        "description": "Found: `Location` is a presigned URL of the image that expires after "
        "`IMAGEGEN_IMAGE_URL_TTL_S` (15 minutes by default). GET it without credentials; ask "
        "here again for a fresh one.",
        "headers": {
            "Location": {
                "description": "A presigned S3 URL of the image",
                "schema": {"type": "string", "format": "uri"},
            }
        },
    },
    304: {"description": "Not modified: `If-None-Match` named the image's ETag (streaming only)"},
}
IF_NONE_MATCH_DESCRIPTION = "The image's ETag from an earlier download (streaming only)"


def image_response(state: ApiState, record: JobRecord, if_none_match: str | None) -> Response:
    """A redirect to the job's image, or the image itself; a problem when it has none."""
    if not record.is_terminal:
        raise ProblemError(
            409,
            "Image not ready",
            f"job {record.job_id} is {record.status.value}; its image is here once it "
            f"succeeds (follow /v1/jobs/{record.job_id}/events, or read the job)",
        )
    if not has_image(record):
        reason = f" ({record.error_code})" if record.error_code else ""
        raise ProblemError(
            409,
            "No image",
            f"job {record.job_id} ended {record.status.value}{reason} without an image",
        )
    bucket, key = record.s3_bucket or "", record.s3_key or ""
    if state.images.streams:
        return _stream(state, record, bucket, key, if_none_match)
    try:
        link = state.images.presigned(bucket, key)
    except (BotoCoreError, ClientError) as e:
        raise _storage_unavailable("cannot sign a URL for the image", e) from e
    return RedirectResponse(link.url, status_code=302, headers={"Cache-Control": "no-store"})


def _stream(
    state: ApiState, record: JobRecord, bucket: str, key: str, if_none_match: str | None
) -> Response:
    etag = f'"{record.sha256}"' if record.sha256 else None
    cached = {"ETag": etag, "Cache-Control": STREAM_CACHE_CONTROL} if etag else {}
    if etag and if_none_match and _matches(if_none_match, etag):
        return Response(status_code=304, headers=cached)
    try:
        found = state.client.s3().get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in _MISSING_OBJECT:
            raise ProblemError(
                404, "Image not found", f"the image of job {record.job_id} is no longer stored"
            ) from e
        raise _storage_unavailable("the image store refused the read", e) from e
    except BotoCoreError as e:
        raise _storage_unavailable("the image store did not answer", e) from e
    body = found["Body"]
    headers = {**cached, "Content-Length": str(found["ContentLength"])}
    media_type = record.content_type or found.get("ContentType") or "application/octet-stream"
    return StreamingResponse(_chunks(body), media_type=media_type, headers=headers)


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(STREAM_CHUNK_BYTES)
    finally:
        body.close()


def _matches(if_none_match: str, etag: str) -> bool:
    offered = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in offered or etag in offered


def _storage_unavailable(detail: str, error: Exception) -> ProblemError:
    """503 for the caller; what S3 said (bucket names included) goes to the log only."""
    log.warning(f"image: {detail}", extra={"error": str(error)})
    return ProblemError(
        503, "Storage unavailable", detail, headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)}
    )
