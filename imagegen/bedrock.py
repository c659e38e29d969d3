"""The bedrock-runtime client, built one way for every part of the service.

botocore's own retries are off (``total_max_attempts=1``): a read timeout retried by botocore
would run, and bill, a generation again behind our back. ``worker.retry`` owns every retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from imagegen.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

__all__ = ["make_bedrock_client"]


def make_bedrock_client(settings: Settings, max_pool_connections: int) -> BedrockRuntimeClient:
    """One client per process, shared by its threads (botocore clients are thread-safe)."""
    if settings.bedrock_botocore_retries == "off":
        retries: dict[str, Any] = {"mode": "standard", "total_max_attempts": 1}
    else:  # only for comparisons: botocore then re-runs calls our policy cannot see
        retries = {"mode": settings.bedrock_botocore_retries}
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=settings.bedrock_connect_timeout_s,
        read_timeout=settings.bedrock_read_timeout_s,
        retries=retries,  # type: ignore[arg-type]
        max_pool_connections=max_pool_connections,
    )
    return boto3.session.Session().client(
        "bedrock-runtime", endpoint_url=settings.bedrock_endpoint_url, config=config
    )
