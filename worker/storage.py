"""Writing images to S3 under a deterministic key, so a job run twice writes one object."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from imagegen.errors import StorageError
from imagegen.image_facts import JobFacts
from worker.images import CONTENT_TYPES, ImageInfo

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "StoredImage",
    "copy_image",
    "delete_image",
    "find_stored_image",
    "image_key",
    "upload_image",
]

_UPLOAD_BACKOFF_S = 0.5
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def image_key(prefix: str, job_id: str, created_at: datetime, image_format: str) -> str:
    """``{prefix}/{yyyy}/{mm}/{dd}/{job_id}.{ext}``, dated by the job's creation (UTC)."""
    day = created_at.strftime("%Y/%m/%d")
    extension = "jpg" if image_format == "jpeg" else image_format
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{head}{day}/{job_id}.{extension}"


@dataclass(frozen=True)
class StoredImage:
    """An image already in S3 for this job, read back from the object's metadata."""

    seed: int | None
    info: ImageInfo
    # Its job, as the object's metadata says (None: written before the facts were kept).
    facts: JobFacts | None = None


def _object_metadata(facts: JobFacts, seed: int | None, info: ImageInfo) -> dict[str, str]:
    return {
        **facts.metadata(),
        "seed": "" if seed is None else str(seed),
        "width": str(info.width),
        "height": str(info.height),
        "sha256": info.sha256,
    }


def upload_image(
    s3: S3Client,
    bucket: str,
    key: str,
    data: bytes,
    *,
    info: ImageInfo,
    facts: JobFacts,
    seed: int | None,
    attempts: int,
) -> None:
    """PutObject with the image's content type and metadata (its job's facts among them), tried
    up to ``attempts`` times."""
    metadata = _object_metadata(facts, seed, info)
    for attempt in range(1, attempts + 1):
        try:
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=info.content_type,
                Metadata=metadata,
            )
        except (ClientError, BotoCoreError) as e:
            if attempt == attempts:
                msg = f"upload to s3://{bucket}/{key} failed {attempts} times: {e}"
                raise StorageError(msg) from e
            time.sleep(_UPLOAD_BACKOFF_S * 2 ** (attempt - 1))
        else:
            return


def delete_image(s3: S3Client, bucket: str, key: str) -> None:
    """DeleteObject (deleting an object that is not there succeeds)."""
    try:
        s3.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as e:
        msg = f"cannot delete s3://{bucket}/{key}: {e}"
        raise StorageError(msg) from e


def find_stored_image(
    s3: S3Client, bucket: str, key: str, job_id: str | None
) -> StoredImage | None:
    """The image an earlier attempt of this job already uploaded, if there is one (with
    ``job_id`` None: whichever job's image the object is)."""
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in _NOT_FOUND:
            return None
        msg = f"cannot check s3://{bucket}/{key}: {e}"
        raise StorageError(msg) from e
    except BotoCoreError as e:
        msg = f"cannot check s3://{bucket}/{key}: {e}"
        raise StorageError(msg) from e
    metadata = head.get("Metadata", {})
    if (job_id is not None and metadata.get("job-id") != job_id) or not metadata.get("sha256"):
        return None
    content_type = head.get("ContentType", "")
    image_format = next((fmt for fmt, ctype in CONTENT_TYPES.items() if ctype == content_type), "")
    seed = metadata.get("seed")
    return StoredImage(
        facts=JobFacts.from_metadata(metadata),
        seed=int(seed) if seed else None,
        info=ImageInfo(
            format=image_format,
            width=int(metadata["width"]),
            height=int(metadata["height"]),
            bytes=int(head.get("ContentLength", 0)),
            sha256=metadata["sha256"],
        ),
    )


def copy_image(
    s3: S3Client, source: tuple[str, str], bucket: str, key: str, *, facts: JobFacts
) -> StoredImage:
    """Copy a cached image (another job's object) under this job's key, its metadata naming
    this job, so a re-run finds it. Raises ``StorageError`` when the source is gone."""
    source_bucket, source_key = source
    found = find_stored_image(s3, source_bucket, source_key, job_id=None)
    if found is None:
        msg = f"the cached image s3://{source_bucket}/{source_key} is gone"
        raise StorageError(msg)
    try:
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": source_bucket, "Key": source_key},
            ContentType=found.info.content_type,
            Metadata=_object_metadata(facts, found.seed, found.info),
            MetadataDirective="REPLACE",
        )
    except (ClientError, BotoCoreError) as e:
        msg = f"copy of s3://{source_bucket}/{source_key} to s3://{bucket}/{key} failed: {e}"
        raise StorageError(msg) from e
    return found
