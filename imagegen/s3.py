"""The S3 client, built one way for every part of the service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from imagegen.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["make_s3_client", "s3_uri"]


def make_s3_client(
    settings: Settings,
    *,
    attempts: int = 3,
    max_pool_connections: int = 10,
    timeouts_s: tuple[float, float] | None = None,
) -> S3Client:
    """An S3 client for the configured endpoint (AWS when unset), with explicit timeouts.

    ``attempts`` is botocore's own retry budget; the worker passes 1 and retries uploads itself.
    ``timeouts_s`` (connect, read) replaces the settings' for requests that must not wait long.
    """
    connect_s, read_s = timeouts_s or (settings.s3_connect_timeout_s, settings.s3_read_timeout_s)
    config = Config(
        region_name=settings.aws_region,
        connect_timeout=connect_s,
        read_timeout=read_s,
        retries={"mode": "standard", "total_max_attempts": attempts},
        max_pool_connections=max_pool_connections,
        # SigV4 for every request and every presigned URL (SigV2 is retired in newer regions).
        signature_version="s3v4",
        # A local S3 (moto) on 127.0.0.1 cannot serve virtual-hosted bucket names.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, config=config
    )


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
