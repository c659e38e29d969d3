"""The bedrock-runtime client, built one way for every part of the service, per pool.

botocore's own retries are off (``total_max_attempts=1``): a read timeout retried by botocore
would run, and bill, a generation again behind our back. ``worker.retry`` owns every retry.

A pool's credentials (``imagegen.pools``): its named profile, or its IAM role assumed through
STS with the profile's (or the standard chain's) credentials. The role's session is cached and
refreshed by botocore before it expires (``RefreshableCredentials``), so a long-running worker
never calls with expired credentials and never holds long-lived keys of its own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, RefreshableCredentials

from imagegen.pools import DEFAULT_POOL, Pool
from imagegen.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient

__all__ = ["PoolClients", "make_bedrock_client", "pool_session"]

# The role session's name in CloudTrail, and how long one lasts before botocore refreshes it.
ROLE_SESSION_NAME = "imagegen"
ROLE_SESSION_S = 3600


def _config(settings: Settings, region: str, max_pool_connections: int) -> Config:
    if settings.bedrock_botocore_retries == "off":
        retries: dict[str, Any] = {"mode": "standard", "total_max_attempts": 1}
    else:  # only for comparisons: botocore then re-runs calls our policy cannot see
        retries = {"mode": settings.bedrock_botocore_retries}
    return Config(
        region_name=region,
        connect_timeout=settings.bedrock_connect_timeout_s,
        read_timeout=settings.bedrock_read_timeout_s,
        retries=retries,  # type: ignore[arg-type]
        max_pool_connections=max_pool_connections,
    )


def make_bedrock_client(
    settings: Settings, max_pool_connections: int, pool: Pool | None = None
) -> BedrockRuntimeClient:
    """One client per process and pool, shared by its threads (botocore clients are
    thread-safe); without ``pool``, the implicit pool's."""
    if pool is None or pool.implicit:
        config = _config(settings, settings.aws_region, max_pool_connections)
        return boto3.session.Session().client(
            "bedrock-runtime", endpoint_url=settings.bedrock_endpoint_url, config=config
        )
    config = _config(settings, pool.region, max_pool_connections)
    return pool_session(settings, pool).client(
        "bedrock-runtime", endpoint_url=pool.endpoint_url, config=config
    )


def pool_session(settings: Settings, pool: Pool) -> boto3.session.Session:
    """The boto3 session of a pool's credentials: its profile's, or its role's (assumed from
    the profile's or the standard chain's credentials, refreshed before they expire)."""
    base = boto3.session.Session(profile_name=pool.profile, region_name=pool.region)
    if pool.role_arn is None:
        return base
    sts = base.client("sts", endpoint_url=settings.sts_endpoint_url, region_name=pool.region)
    role_arn, external_id = pool.role_arn, pool.external_id

    def assume() -> dict[str, str]:
        asked: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": ROLE_SESSION_NAME,
            "DurationSeconds": ROLE_SESSION_S,
        }
        if external_id:
            asked["ExternalId"] = external_id
        found = sts.assume_role(**asked)["Credentials"]
        return {
            "access_key": found["AccessKeyId"],
            "secret_key": found["SecretAccessKey"],
            "token": found["SessionToken"],
            "expiry_time": found["Expiration"].isoformat(),
        }

    credentials = RefreshableCredentials.create_from_metadata(
        metadata=assume(), refresh_using=assume, method="sts-assume-role"
    )
    core = botocore.session.Session()
    resolver = core.get_component("credential_provider")
    resolver.insert_before("env", _AssumedRole(credentials))
    return boto3.session.Session(botocore_session=core, region_name=pool.region)


class _AssumedRole(CredentialProvider):
    """A role's refreshable session, first in a pool's credential chain."""

    METHOD = "sts-assume-role"
    CANONICAL_NAME = "imagegen-pool-role"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._credentials


class PoolClients:
    """Each pool's client, built on first use and kept for the process (thread-safe)."""

    def __init__(self, settings: Settings, max_pool_connections: int) -> None:
        self._settings = settings
        self._connections = max_pool_connections
        self._clients: dict[str, BedrockRuntimeClient] = {}
        self._lock = threading.Lock()

    def client(self, pool: Pool) -> BedrockRuntimeClient:
        key = DEFAULT_POOL if pool.implicit else pool.name
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                found = make_bedrock_client(self._settings, self._connections, pool)
                self._clients[key] = found
            return found

    def adopt(self, client: BedrockRuntimeClient) -> None:
        """Use ``client`` for the implicit pool (the one a process built already)."""
        with self._lock:
            self._clients[DEFAULT_POOL] = client
