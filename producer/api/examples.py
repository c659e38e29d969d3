"""Examples the OpenAPI document shows (and ``/docs`` fills its forms with); a test checks each
against its schema."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHAIN_EXAMPLE",
    "CHAIN_RESOURCE_EXAMPLE",
    "JOB_LIST_EXAMPLE",
    "JOB_RESOURCE_EXAMPLE",
    "JOB_SPEC_EXAMPLES",
    "PROBLEM_EXAMPLES",
    "UPLOAD_EXAMPLE",
]

_JOB_ID = "acme.order-1234"
_KEY = "images/2026/11/25/acme.order-1234.jpeg"
_PRESIGNED = (
    "https://imagegen-images.s3.us-west-2.amazonaws.com/images/2026/11/25/acme.order-1234.jpeg"
    "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=...&X-Amz-Date=20261125T162105Z"
    "&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=..."
)

JOB_SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "text-to-image": {
        "summary": "Text to image (Stable Image Core, the default model)",
        "value": {
            "request": {
                "prompt": "Cozy coffee shop interior with warm lighting",
                "aspect_ratio": "3:2",
                "output_format": "jpeg",
                "negative_prompt": "cluttered, dark, empty",
            },
            "metadata": {"order_id": 1234},
        },
    },
    "webhook": {
        "summary": "Your own id, and a webhook when it ends",
        "value": {
            "job_id": "order-1234",
            "request": {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"},
            "webhook_url": "https://example.com/hooks/imagegen",
            "webhook_events": ["job.succeeded", "job.failed"],
        },
    },
    "upscale": {
        "summary": "Upscale an uploaded image (POST /v1/uploads gives its s3:// URI)",
        "value": {
            "model_id": "us.stability.stable-fast-upscale-v1:0",
            "request": {
                "image": "s3://imagegen-images/uploads/acme/01M89QZ6D1V7M2K9T4Y3N8C5HB.png"
            },
        },
    },
    "another-jobs-output": {
        "summary": "Remove the background of another of your jobs' image",
        "value": {
            "model_id": "us.stability.stable-image-remove-background-v1:0",
            "request": {"image": {"job": "order-1234"}},
        },
    },
}

JOB_RESOURCE_EXAMPLE: dict[str, Any] = {
    "job_id": _JOB_ID,
    "status": "succeeded",
    "model_id": "stability.stable-image-core-v1:0",
    "priority": "interactive",
    "request": {
        "prompt": "Cozy coffee shop interior with warm lighting",
        "negative_prompt": "cluttered, dark, empty",
        "aspect_ratio": "3:2",
        "output_format": "jpeg",
        "seed": 0,
        "mode": "text-to-image",
    },
    "metadata": {"order_id": 1234},
    "created_at": "2026-11-25T16:21:01.512000Z",
    "started_at": "2026-11-25T16:21:01.530000Z",
    "finished_at": "2026-11-25T16:21:04.101000Z",
    "attempts": 1,
    "tenant": "acme",
    "seed": 3619163350,
    "s3_bucket": "imagegen-images",
    "s3_key": _KEY,
    "s3_uri": f"s3://imagegen-images/{_KEY}",
    "content_type": "image/jpeg",
    "width": 1216,
    "height": 832,
    "bytes": 412733,
    "sha256": "9f2c1e0b8a4d6f3e2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d",
    "bedrock_latency_ms": 2540,
    "cost_usd": 0.04,
    "place": "final",
    "url": f"/v1/jobs/{_JOB_ID}",
    "image_url": _PRESIGNED,
    "image_url_expires_at": "2026-11-25T16:36:05Z",
}

JOB_LIST_EXAMPLE: dict[str, Any] = {
    "jobs": [JOB_RESOURCE_EXAMPLE],
    "next_cursor": "1764087661512-acme.order-1234",
    "next": "/v1/jobs?cursor=1764087661512-acme.order-1234&limit=1",
}

CHAIN_EXAMPLE: dict[str, Any] = {
    "steps": [
        {"request": {"prompt": "a red apple on a wooden table"}},
        {
            "model_id": "us.stability.stable-image-remove-background-v1:0",
            "request": {"image": {"step": 0}},
        },
        {"model_id": "us.stability.stable-fast-upscale-v1:0", "request": {"image": {"step": 1}}},
    ]
}

CHAIN_RESOURCE_EXAMPLE: dict[str, Any] = {
    "chain_id": "01M89S0B3XQ2C6W4Z2E8N1K5TP",
    "tenant": "acme",
    "created_at": "2026-11-25T16:30:00Z",
    "status": "running",
    "reason": None,
    "output_s3_uri": None,
    "output_image_url": None,
    "output_image_url_expires_at": None,
    "cost_usd": 0.04,
    "url": "/v1/chains/01M89S0B3XQ2C6W4Z2E8N1K5TP",
    "steps": [
        {
            "job_id": "01M89S0B4A7W2E8N1K5TPXQ2C6",
            "model_id": "stability.stable-image-core-v1:0",
            "status": "succeeded",
            "s3_uri": "s3://imagegen-images/images/2026/11/25/01M89S0B4A7W2E8N1K5TPXQ2C6.png",
            "cost_usd": 0.04,
            "url": "/v1/jobs/01M89S0B4A7W2E8N1K5TPXQ2C6",
            "image_url": "https://imagegen-images.s3.us-west-2.amazonaws.com/images/2026/11/25/"
            "01M89S0B4A7W2E8N1K5TPXQ2C6.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&...",
            "image_url_expires_at": "2026-11-25T16:45:00Z",
        },
        {
            "job_id": "01M89S0B4B9R3F0P2L6UQYR3D7",
            "model_id": "us.stability.stable-image-remove-background-v1:0",
            "status": "running",
            "url": "/v1/jobs/01M89S0B4B9R3F0P2L6UQYR3D7",
        },
    ],
}

UPLOAD_EXAMPLE: dict[str, Any] = {
    "image": "s3://imagegen-images/uploads/acme/01M89QZ6D1V7M2K9T4Y3N8C5HB.png",
    "s3_bucket": "imagegen-images",
    "s3_key": "uploads/acme/01M89QZ6D1V7M2K9T4Y3N8C5HB.png",
    "format": "png",
    "width": 1024,
    "height": 768,
    "bytes": 183211,
    "image_url": "https://imagegen-images.s3.us-west-2.amazonaws.com/uploads/acme/"
    "01M89QZ6D1V7M2K9T4Y3N8C5HB.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&...",
    "image_url_expires_at": "2026-11-25T16:36:05Z",
}


def _problem(status: int, title: str, detail: str, *errors: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [{"field": field, "message": message} for field, message in errors],
    }


# What each kind of problem looks like; routes name theirs where the usual one would mislead.
PROBLEM_EXAMPLES: dict[str, dict[str, Any]] = {
    "bad-body": _problem(
        400,
        "Body is not a JSON object",
        "body: Expecting value: line 1 column 1 (char 0)",
        ("body", "Expecting value: line 1 column 1 (char 0)"),
    ),
    "unauthorized": _problem(401, "Unauthorized", "send Authorization: Bearer <API key>"),
    "not-found": _problem(404, "Job not found", "no job order-1234"),
    "batch-not-found": _problem(404, "Batch not found", "no batch 01M89S0B3XQ2C6W4Z2E8N1K5TP"),
    "chain-not-found": _problem(404, "Chain not found", "no chain 01M89S0B3XQ2C6W4Z2E8N1K5TP"),
    "conflict": _problem(409, "Conflict", "job acme.order-1234 exists with a different request"),
    "image-not-ready": _problem(
        409,
        "Image not ready",
        "job acme.order-1234 is running; its image is here once it succeeds "
        "(follow /v1/jobs/acme.order-1234/events, or read the job)",
    ),
    "already-final": _problem(
        409, "Job already final", "job acme.order-1234 is succeeded; it cannot be canceled"
    ),
    "no-admin-api": _problem(404, "Not Found", "no admin API on this service"),
    "admin-unauthorized": _problem(401, "Unauthorized", "send Authorization: Bearer <admin token>"),
    "too-many-streams": _problem(
        429,
        "Too many event streams",
        "this tenant, or this API process, has as many event streams open as it may",
    ),
    "too-large": _problem(413, "Body too large", "the body is over 16777216 bytes"),
    "invalid-request": _problem(
        422,
        "Invalid request",
        "the request breaks a rule; see errors",
        ("query.limit", "Input should be less than or equal to 200"),
    ),
    "invalid-job": _problem(
        422,
        "Invalid job",
        "the job was refused; see errors",
        (
            "request.aspect_ratio",
            "Input should be '16:9', '1:1', '21:9', '2:3', '3:2', '4:5', '5:4', '9:16' or '9:21'",
        ),
        ("request.colour", "Extra inputs are not permitted"),
    ),
    "too-many-bad-keys": _problem(
        429,
        "Too many failed authentications",
        "too many bad API keys from this client or for this key in the last minute",
    ),
    "queue-full": _problem(
        429,
        "Too many jobs waiting",
        "IMAGEGEN_MAX_QUEUED_PER_TENANT: tenant acme has 10000 jobs not finished yet (limit "
        "10000); retry in about 40 s",
    ),
    "storage-unavailable": _problem(503, "Storage unavailable", "the image store did not answer"),
}
