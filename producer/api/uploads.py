"""``/v1/uploads``: put an input image in S3 (the body, or a presigned PUT) and get its S3 URI
(and a short-lived link to it).

Uploads land under the tenant's own prefix (``{uploads_prefix}/{tenant}/``), the one place
besides ``IMAGEGEN_INPUT_S3_PREFIXES`` its jobs may take input images from. The image is checked
(format, size) before it is stored; a presigned upload is checked when a job names it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field

from imagegen.binding import UPLOAD_CONTENT_TYPES, store_upload, upload_key
from imagegen.errors import FieldError
from imagegen.inputs import UnusableImageError
from imagegen.s3 import s3_uri
from producer.api.auth import Tenant
from producer.api.bodies import raw_body
from producer.api.examples import UPLOAD_EXAMPLE
from producer.api.problems import ProblemError, problem_responses
from producer.api.state import State

__all__ = ["router"]

router = APIRouter(tags=["uploads"])


class Upload(BaseModel):
    """Where an input image is (or will be, for a presigned upload)."""

    model_config = ConfigDict(json_schema_extra={"examples": [UPLOAD_EXAMPLE]})

    image: str = Field(description="The S3 URI to name as a job's input image")
    s3_bucket: str
    s3_key: str
    format: str
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    # Presigned uploads: PUT the image here, with this Content-Type, before it expires.
    upload_url: str | None = None
    upload_content_type: str | None = None
    expires_in_s: int | None = None
    # An uploaded image: a presigned GET of it (none for a presigned upload, or where the
    # service streams images).
    image_url: str | None = Field(
        default=None,
        description="Where to GET the uploaded image: a presigned URL that expires at "
        "`image_url_expires_at` (null for a presigned upload, and where the service streams "
        "images)",
    )
    image_url_expires_at: datetime | None = None


class PresignRequest(BaseModel):
    format: Literal["png", "jpeg", "webp"]


_UPLOAD_BODY = {
    "required": True,
    "content": {
        ctype: {"schema": {"type": "string", "format": "binary"}} for ctype in UPLOAD_CONTENT_TYPES
    },
}


@router.post(
    "/v1/uploads",
    operation_id="uploadImage",
    status_code=201,
    response_model=Upload,
    response_description="Stored: its S3 URI to name in a job, and a link to it",
    responses=problem_responses(
        401,
        429,
        described={
            413: "Body too large, or an image over IMAGEGEN_INPUT_IMAGE_MAX_BYTES",
            422: "Not a PNG, JPEG or WebP image the models take (the problem says why)",
        },
    ),
    openapi_extra={"requestBody": _UPLOAD_BODY},
    summary="Upload an input image (the body is the image)",
)
def upload_image(
    *,
    body: Annotated[bytes, Depends(raw_body)],
    tenant_id: Tenant,
    state: State,
    content_type: Annotated[str | None, Header(max_length=100)] = None,
) -> Upload:
    try:
        stored = store_upload(state.client.s3(), state.settings, tenant_id, body, content_type)
    except UnusableImageError as e:
        status = 413 if len(body) > state.settings.input_image_max_bytes else 422
        raise ProblemError(status, "Unusable image", str(e), [FieldError("body", str(e))]) from e
    link = state.images.for_upload(stored.bucket, stored.key)
    return Upload(
        image=stored.uri,
        s3_bucket=stored.bucket,
        s3_key=stored.key,
        format=stored.facts.format,
        width=stored.facts.width,
        height=stored.facts.height,
        bytes=stored.facts.bytes,
        image_url=link.url if link else None,
        image_url_expires_at=link.expires_at if link else None,
    )


@router.post(
    "/v1/uploads/presigned",
    operation_id="createPresignedUpload",
    status_code=201,
    response_model=Upload,
    response_description="PUT the image to `upload_url` with `upload_content_type` before "
    "`expires_in_s` runs out; then name `image` in a job",
    responses=problem_responses(401, 422, 429),
    summary="Get a presigned PUT URL for an input image",
)
def presign_upload(body: PresignRequest, tenant_id: Tenant, state: State) -> Upload:
    settings = state.settings
    key = upload_key(settings, tenant_id, body.format)
    content_type = f"image/{body.format}"
    url = state.client.s3().generate_presigned_url(
        "put_object",
        Params={"Bucket": settings.s3_bucket, "Key": key, "ContentType": content_type},
        ExpiresIn=settings.upload_url_ttl_s,
    )
    return Upload(
        image=s3_uri(settings.s3_bucket, key),
        s3_bucket=settings.s3_bucket,
        s3_key=key,
        format=body.format,
        upload_url=url,
        upload_content_type=content_type,
        expires_in_s=settings.upload_url_ttl_s,
    )
