"""Calling a model through bedrock-runtime InvokeModel, and reading its answer.

The client comes from ``imagegen.bedrock`` (botocore's retries off); ``worker.retry`` owns every
retry.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from imagegen.errors import BedrockCallError, InvalidModelOutputError
from worker.retry import retry_after_s

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

__all__ = [
    "BedrockAnswer",
    "Filtered",
    "Generated",
    "interpret",
    "invoke_model",
]

INFERENCE_ERROR = "Inference error"
FILTER_REASON_PREFIX = "Filter reason"
_MAX_ERROR_MESSAGE_CHARS = 500
INVOCATION_LATENCY_HEADER = "x-amzn-bedrock-invocation-latency"


@dataclass(frozen=True)
class BedrockAnswer:
    payload: dict[str, Any]
    latency_ms: int
    # Bedrock's id of the request (x-amzn-RequestId), when it sent one.
    request_id: str | None = None
    # Bedrock's own time for the invocation (x-amzn-bedrock-invocation-latency), when sent.
    invocation_latency_ms: int | None = None


def invoke_model(
    client: BedrockRuntimeClient, model_id: str, body: dict[str, Any]
) -> BedrockAnswer:
    """One InvokeModel call; every failure becomes a ``BedrockCallError`` with a stable code."""
    started = time.perf_counter()
    try:
        response = client.invoke_model(
            modelId=model_id,
            body=json.dumps(body),
            contentType="application/json",
            accept="application/json",
        )
        raw = response["body"].read()
    except ClientError as e:
        raise _from_client_error(e) from e
    except ReadTimeoutError as e:
        raise BedrockCallError("ReadTimeout", str(e)) from e
    except ConnectTimeoutError as e:
        raise BedrockCallError("ConnectTimeout", str(e)) from e
    except (EndpointConnectionError, ConnectionClosedError) as e:
        raise BedrockCallError("ConnectionError", str(e)) from e
    latency_ms = round((time.perf_counter() - started) * 1000)
    try:
        payload = json.loads(raw)
    except ValueError as e:
        msg = f"response body is not JSON: {e}"
        raise InvalidModelOutputError(msg) from e
    if not isinstance(payload, dict):
        msg = "response body is not a JSON object"
        raise InvalidModelOutputError(msg)
    metadata = response.get("ResponseMetadata", {})
    request_id = metadata.get("RequestId") or None
    invocation = str(metadata.get("HTTPHeaders", {}).get(INVOCATION_LATENCY_HEADER) or "")
    return BedrockAnswer(
        payload=payload,
        latency_ms=latency_ms,
        request_id=request_id,
        invocation_latency_ms=int(invocation) if invocation.isdigit() else None,
    )


def _from_client_error(error: ClientError) -> BedrockCallError:
    details = error.response.get("Error", {})
    metadata = error.response.get("ResponseMetadata", {})
    headers = metadata.get("HTTPHeaders", {})
    return BedrockCallError(
        details.get("Code", "Unknown"),
        details.get("Message", str(error))[:_MAX_ERROR_MESSAGE_CHARS],
        http_status=metadata.get("HTTPStatusCode"),
        retry_after_s=retry_after_s(headers.get("retry-after")),
        request_id=metadata.get("RequestId") or None,
    )


@dataclass(frozen=True)
class Generated:
    image: bytes
    seed: int | None


@dataclass(frozen=True)
class Filtered:
    reason: str
    seed: int | None

    @property
    def image_withheld(self) -> bool:
        """Bedrock generated an image and its filter withheld it (``output image``), as opposed
        to refusing the prompt before generating anything."""
        return "output image" in self.reason.lower()


def interpret(payload: dict[str, Any]) -> Generated | Filtered:
    """Read ``{"seeds", "finish_reasons", "images"}``: an image, a filter verdict, or an error.

    A non-null finish reason means there is no usable image. A filter is final; an
    ``Inference error`` raises a retryable ``BedrockCallError``.
    """
    seeds = payload.get("seeds") or [None]
    reasons = payload.get("finish_reasons") or [None]
    images = payload.get("images") or []
    seed = seeds[0] if isinstance(seeds[0], int) else None
    reason = reasons[0]
    if reason is not None:
        reason = str(reason)
        if reason.startswith(FILTER_REASON_PREFIX):
            return Filtered(reason=reason, seed=seed)
        raise BedrockCallError("InferenceError", f"finish reason: {reason}")
    if not images or not isinstance(images[0], str) or not images[0]:
        msg = "response has no image"
        raise InvalidModelOutputError(msg)
    try:
        data = base64.b64decode(images[0], validate=True)
    except (binascii.Error, ValueError) as e:
        msg = f"image is not valid base64: {e}"
        raise InvalidModelOutputError(msg) from e
    return Generated(image=data, seed=seed)
