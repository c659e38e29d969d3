"""``imagegen doctor``: is this deployment able to run jobs, and if not, what to fix.

Each check says ok, warn, fail or skip, what it saw, and the fix. Nothing here is billed: a model
is probed with an empty InvokeModel body, which Bedrock refuses (ValidationException) after it
has checked credentials, IAM, model access and the Marketplace subscription, and before it
generates anything. S3 is probed by writing and reading one small object per prefix (always the
same key, so repeated runs leave one object each).

An endpoint that cannot be reached (DNS, connection refused, no answer) is reported as a network
failure, never as bad credentials: the credentials are blamed only when AWS answered and refused
them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as EndpointUnreachableError

from imagegen.bedrock import make_bedrock_client
from imagegen.binding import upload_key_prefix
from imagegen.epoch import EpochWatch
from imagegen.errors import ImagegenError
from imagegen.models import PROFILE_REGIONS_US, ImageModel, model_for
from imagegen.pools import Pool
from imagegen.redis.scripts import Scripts
from imagegen.s3 import make_s3_client
from imagegen.settings import Settings
from imagegen.store.quota import QuotaStore
from producer.checks import Check, Status
from producer.doctor_redis import loss_check, persistence_check, signing_secret_check

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient
    from mypy_boto3_s3 import S3Client

__all__ = ["Check", "Doctor", "Status"]

PROBE_BODY = b"{}"
PROBE_KEY = "_doctor/probe"
PROBE_CONTENT = b"imagegen doctor probe: safe to delete\n"
ON_DEMAND_REGION = "us-west-2"
IAM_POLICY = "ops/iam-policy.json"
_NO_BUCKET = {"NoSuchBucket", "404"}
_RETRYABLE = {"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"}
# What AWS answers to a key it does not know, a bad signature or an expired session: the
# credentials' fault, not IAM's.
_REFUSED_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
}
RENEW_CREDENTIALS = "renew or replace the credentials (expired session? wrong profile?)"
NETWORK_FIX = (
    "check the network path to {what}: DNS, a proxy (HTTPS_PROXY), a VPC endpoint, a firewall"
)
# The identity check gives up quickly: an endpoint that does not answer is a network problem.
STS_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2})


class Doctor:
    """Runs the checks against the configured AWS (or local) endpoints."""

    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: Any = None,
        bedrock: Callable[[], BedrockRuntimeClient] | None = None,
        s3: Callable[[], S3Client] | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis_client
        self._bedrock = bedrock or (lambda: make_bedrock_client(settings, 2))
        self._s3 = s3 or (lambda: make_s3_client(settings, attempts=1))

    @property
    def on_aws(self) -> bool:
        """True when Bedrock is AWS itself, not a local endpoint."""
        return self._settings.bedrock_endpoint_url is None

    def run(self, model_ids: Iterable[str] | None = None) -> list[Check]:
        models = list(model_ids or self._settings.allowed_model_ids)
        checks = [self.credentials(), self.region(models)]
        if checks[0].status == "fail":
            return checks  # every other call would fail the same way
        checks += [self.model_access(model_id) for model_id in models]
        checks += self.storage()
        checks.append(self.redis())
        if self._redis is not None and checks[-1].status == "ok":
            checks.append(persistence_check(self._redis))
            checks.append(signing_secret_check(self._redis, self._settings))
            watch = EpochWatch(self._redis, self._s3(), self._settings)
            checks.append(loss_check(watch, self._settings))
        checks += [self.quota(model_id) for model_id in models]
        checks += self.pools(models)
        return checks

    # -- the checks --------------------------------------------------------------------------

    def credentials(self) -> Check:
        found = boto3.session.Session().get_credentials()
        if found is None:
            return Check(
                "credentials",
                "fail",
                "no AWS credentials found",
                "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with "
                "an instance or task role",
            )
        source = f"from {found.method}"
        if not self.on_aws:
            return Check("credentials", "ok", f"{source} (local endpoints: identity not checked)")
        try:
            identity = (
                boto3.session.Session()
                .client("sts", region_name=self._settings.aws_region, config=STS_CONFIG)
                .get_caller_identity()
            )
        except ClientError as e:
            return Check(
                "credentials",
                "fail",
                f"{source}, but STS refused them: {_reason(e)}",
                RENEW_CREDENTIALS,
            )
        except BotoCoreError as e:
            unreachable = _network_failure(e)
            if unreachable is None:
                return Check("credentials", "fail", f"{source}: {_reason(e)}", RENEW_CREDENTIALS)
            return Check(
                "network",
                "fail",
                f"STS is not reachable ({unreachable}): the credentials ({source}) were not "
                "checked",
                NETWORK_FIX.format(what="AWS"),
            )
        return Check("credentials", "ok", f"{source}: {identity['Arn']}")

    def region(self, model_ids: list[str]) -> Check:
        region = self._settings.aws_region
        models = [m for m in map(model_for, model_ids) if m is not None]
        profiled = [m.model_id for m in models if m.access == "inference-profile"]
        if profiled and region not in PROFILE_REGIONS_US:
            return Check(
                "region",
                "fail",
                f"{region}: the us. inference profiles ({len(profiled)} models) are called from "
                f"{', '.join(PROFILE_REGIONS_US)}",
                f"set IMAGEGEN_AWS_REGION to one of {', '.join(PROFILE_REGIONS_US)}, or drop "
                "those models from IMAGEGEN_ALLOWED_MODEL_IDS",
            )
        on_demand = [m.model_id for m in models if m.access == "on-demand"]
        if on_demand and region != ON_DEMAND_REGION:
            return Check(
                "region",
                "warn",
                f"{region}: Core, Ultra and SD3.5 are on demand in {ON_DEMAND_REGION}; check "
                "each model's page for this region",
            )
        return Check("region", "ok", region)

    def model_access(self, model_id: str) -> Check:
        return self._probe(f"model {model_id}", model_id, self._bedrock)

    def pools(self, model_ids: list[str]) -> list[Check]:
        """Every configured pool that serves one of ``model_ids``: its credentials and access to
        each of its models (one unbilled probe each, through its own client), and its circuit
        as the fleet sees it."""
        settings = self._settings
        checks = []
        for spec in settings.pools:
            pool = Pool.of(spec)
            served = [m for m in spec.models if m in model_ids]
            if not served:
                continue
            client: list[BedrockRuntimeClient] = []

            def pool_client(pool: Pool = pool, client: list[Any] = client) -> Any:
                if not client:
                    client.append(make_bedrock_client(settings, 2, pool))
                return client[0]

            for model_id in served:
                name = f"pool {pool.name} ({pool.region}) {model_id}"
                try:
                    checks.append(self._probe(name, model_id, pool_client))
                except (ClientError, BotoCoreError) as e:  # the role could not be assumed
                    checks.append(
                        Check(
                            name,
                            "fail",
                            f"its credentials: {_reason(e)}",
                            "check the pool's profile, or its role's trust policy and the "
                            "caller's sts:AssumeRole permission",
                        )
                    )
                checks.append(self.circuit(pool, model_id))
        return checks

    def circuit(self, pool: Pool, model_id: str) -> Check:
        """A pool's circuit for one model, as the workers left it."""
        name = f"pool {pool.name} circuit {model_id}"
        if self._redis is None:
            return Check(name, "skip", "no Redis client")
        try:
            found = QuotaStore(self._redis, self._settings).pool_statuses(model_id)
        except redis.RedisError as e:
            return Check(name, "skip", f"Redis: {e}")
        status = next((s for s in found if s.pool == pool.name), None)
        if status is None or status.circuit is None:
            opened = (
                f" (opened {status.circuit_opens} times)" if status and status.circuit_opens else ""
            )
            return Check(name, "ok", f"closed{opened}")
        return Check(
            name,
            "warn",
            f"{status.circuit} after {status.circuit_reason}: no calls but one probe "
            f"every {self._settings.pool_circuit_open_s:g} s",
            "grant the pool's account access to the model (IAM, model access, the Marketplace "
            "subscription) or take the model out of the pool's models",
        )

    def _probe(self, name: str, model_id: str, client: Callable[[], BedrockRuntimeClient]) -> Check:
        model = model_for(model_id)
        try:
            client().invoke_model(
                modelId=model_id,
                body=PROBE_BODY,
                contentType="application/json",
                accept="application/json",
            )
        except ClientError as e:
            return _judge_probe(name, model_id, model, e)
        except NoCredentialsError:
            return Check(name, "fail", "no credentials to sign the call", "see credentials")
        except BotoCoreError as e:
            return Check(
                name,
                "fail",
                f"bedrock-runtime is not reachable: {_network_failure(e) or _reason(e)}",
                "check IMAGEGEN_BEDROCK_ENDPOINT_URL (unset for AWS) and "
                + NETWORK_FIX.format(what="it"),
            )
        return Check(name, "warn", "an empty body was accepted: the endpoint is not Bedrock's")

    def storage(self) -> list[Check]:
        settings = self._settings
        prefixes = {
            "images": f"{settings.s3_prefix.strip('/')}/{PROBE_KEY}",
            "uploads": f"{upload_key_prefix(settings, None).rstrip('/')}/{PROBE_KEY}",
        }
        return [self._storage_check(kind, key) for kind, key in prefixes.items()]

    def _storage_check(self, kind: str, key: str) -> Check:
        bucket = self._settings.s3_bucket
        where = f"s3://{bucket}/{key}"
        name = f"s3 {kind}"
        try:
            s3 = self._s3()
            s3.put_object(Bucket=bucket, Key=key, Body=PROBE_CONTENT)
            read = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in _REFUSED_CREDENTIALS:
                return Check(name, "fail", f"S3 refused the credentials: {code}", RENEW_CREDENTIALS)
            if code in _NO_BUCKET:
                return Check(
                    name,
                    "fail",
                    f"bucket {bucket} does not exist ({self._settings.aws_region})",
                    "create it, or set IMAGEGEN_S3_BUCKET to yours",
                )
            prefix = key.removesuffix(PROBE_KEY)
            return Check(
                name,
                "fail",
                f"{where}: {code or 'error'}",
                f"grant s3:PutObject and s3:GetObject on arn:aws:s3:::{bucket}/{prefix}* "
                f"({IAM_POLICY})",
            )
        except BotoCoreError as e:
            return Check(
                name,
                "fail",
                f"S3 is not reachable: {_network_failure(e) or _reason(e)}",
                "check IMAGEGEN_S3_ENDPOINT_URL (unset for AWS) and "
                + NETWORK_FIX.format(what="it"),
            )
        if read != PROBE_CONTENT:
            return Check(name, "fail", f"{where} read back different bytes")
        return Check(name, "ok", f"wrote and read {where}")

    def redis(self) -> Check:
        if self._redis is None:
            return Check("redis", "skip", "no Redis client")
        try:
            self._redis.ping()
        except redis.RedisError as e:
            return Check(
                "redis",
                "fail",
                f"{self._settings.redis_url}: {e}",
                "start Redis or fix IMAGEGEN_REDIS_URL",
            )
        try:
            Scripts.of(self._redis).load()  # what every script needs: Redis Functions
        except ImagegenError as e:
            return Check(
                "redis",
                "fail",
                f"{self._settings.redis_url}: {e}",
                "upgrade Redis to 7.0 or newer (or use a managed Redis 7 or Valkey)",
            )
        return Check("redis", "ok", f"{self._settings.redis_url} (its scripts are loaded)")

    def quota(self, model_id: str) -> Check:
        name = f"quota {model_id}"
        limit = self._settings.limit_for(model_id)
        configured = f"configured {limit.rpm:g}/min" if limit.rpm else "no limit configured"
        seen = ""
        if self._redis is not None:
            try:
                status = QuotaStore(self._redis, self._settings).status(model_id)
                seen = (
                    f"; effective {status.effective_rpm:g}/min, {status.throttles_total} throttles"
                )
            except redis.RedisError:
                seen = ""
        if not self.on_aws:
            return Check(name, "ok", f"{configured}{seen} (local: account quotas not read)")
        account = self._account_quota(model_for(model_id))
        if account is None:
            return Check(
                name,
                "warn",
                f"{configured}{seen}; the account reports no per-minute quota for it",
                "set IMAGEGEN_MODEL_LIMITS from the Service Quotas console (Bedrock may count "
                "this model by tokens)",
            )
        if limit.rpm == 0 or limit.rpm > account:
            return Check(
                name,
                "warn",
                f"{configured}{seen}; the account allows {account:g}/min",
                f'set IMAGEGEN_MODEL_LIMITS to {{"{model_id}": {{"rpm": {account:g}}}}}',
            )
        return Check(name, "ok", f"{configured}{seen}; the account allows {account:g}/min")

    def _account_quota(self, model: ImageModel | None) -> float | None:
        """The account's requests-per-minute quota for the model, from Service Quotas."""
        if model is None:
            return None
        try:
            client = boto3.session.Session().client(
                "service-quotas", region_name=self._settings.aws_region
            )
            pages = client.get_paginator("list_service_quotas").paginate(ServiceCode="bedrock")
            for page in pages:
                for quota in page["Quotas"]:
                    title = quota.get("QuotaName", "").lower()
                    if model.name.lower() in title and "per minute" in title:
                        return float(quota["Value"])
        except (ClientError, BotoCoreError):
            return None
        return None


def _judge_probe(name: str, model_id: str, model: ImageModel | None, error: ClientError) -> Check:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "")
    if code == "ValidationException":
        return _judge_validation(name, model_id, model, message)
    if code in _REFUSED_CREDENTIALS:
        return Check(name, "fail", f"Bedrock refused the credentials: {code}", RENEW_CREDENTIALS)
    if code == "AccessDeniedException":
        return Check(
            name,
            "fail",
            f"access denied: {message[:160]}",
            f"grant bedrock:InvokeModel on {_iam_resources(model_id, model)} ({IAM_POLICY}) "
            "and enable model access in the Bedrock console",
        )
    if code == "ResourceNotFoundException":
        return Check(
            name,
            "fail",
            "the model is not available here",
            "check the id and IMAGEGEN_AWS_REGION against the model's page",
        )
    if code in _RETRYABLE:
        return Check(name, "warn", f"reachable, but answered {code}")
    return Check(name, "fail", f"{code}: {message[:160]}")


def _judge_validation(name: str, model_id: str, model: ImageModel | None, message: str) -> Check:
    """A ValidationException to the empty body: access is fine, unless it says otherwise."""
    if "operation not allowed" in message.lower():
        return Check(
            name,
            "fail",
            "no AWS Marketplace subscription (Operation not allowed)",
            "enable the model in the Bedrock console's Model access page with a role that "
            "has aws-marketplace:Subscribe (one subscription covers all 13 Image Services)",
        )
    if "inference profile" in message.lower():
        return Check(
            name,
            "fail",
            "this model runs only through an inference profile",
            f"use us.{model_id} in IMAGEGEN_ALLOWED_MODEL_IDS",
        )
    detail = "allowed; an empty body is refused before generating (nothing billed)"
    if model is not None and model.access == "inference-profile":
        detail += f"; the profile routes to {', '.join(model.regions)}"
    return Check(name, "ok", detail)


def _iam_resources(model_id: str, model: ImageModel | None) -> str:
    if model is None or model.access == "on-demand":
        return f"foundation-model/{model.base_model_id if model else model_id}"
    return (
        f"inference-profile/{model.model_id} and foundation-model/{model.base_model_id} in "
        f"{', '.join(model.regions)}"
    )


def _network_failure(error: BotoCoreError) -> str | None:
    """How an endpoint could not be reached (DNS, refused, timed out), or None when the error is
    not a network one."""
    if not isinstance(error, EndpointUnreachableError | HTTPClientError):
        return None
    where = str(getattr(error, "kwargs", {}).get("endpoint_url") or "the endpoint").rstrip("/")
    cause: BaseException | None = getattr(error, "kwargs", {}).get("error") or error
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"{where}: DNS cannot resolve its name"
        if isinstance(cause, ConnectionRefusedError):
            return f"{where}: connection refused"
        if isinstance(cause, TimeoutError | socket.timeout):
            return f"{where}: no answer (timed out)"
        cause = cause.__cause__ or cause.__context__
    return f"{where}: {_reason(error)}"


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
