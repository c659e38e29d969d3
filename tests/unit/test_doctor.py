"""``imagegen doctor`` against the emulator and a real-HTTP S3 (moto's server), with each
failure simulated: what it reports, and the fix it prints."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import fakeredis
import pytest
from moto.server import ThreadedMotoServer

from imagegen.settings import Settings
from producer.doctor import Check, Doctor

CORE = "stability.stable-image-core-v1:0"
UPSCALE = "us.stability.stable-fast-upscale-v1:0"
BUCKET = "doctor-bucket"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def doctor(start_emulator: Any, s3_url: str) -> Callable[..., list[Check]]:
    boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1").create_bucket(Bucket=BUCKET)

    def run(emulator: dict[str, Any] | None = None, **settings: Any) -> list[Check]:
        settings.setdefault("s3_bucket", BUCKET)
        configured = Settings(
            bedrock_endpoint_url=start_emulator(**(emulator or {})),
            s3_endpoint_url=s3_url,
            _env_file=None,  # type: ignore[call-arg]
            **settings,
        )
        redis = fakeredis.FakeRedis(decode_responses=True)
        return Doctor(configured, redis_client=redis).run([CORE, UPSCALE])

    return run


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_a_healthy_deployment_passes_every_check(doctor: Callable[..., list[Check]]) -> None:
    checks = by_name(doctor())
    assert {c.status for c in checks.values()} == {"ok"}, checks
    assert set(checks) == {
        "credentials",
        "region",
        f"model {CORE}",
        f"model {UPSCALE}",
        "s3 images",
        "s3 uploads",
        "redis",
        f"quota {CORE}",
        f"quota {UPSCALE}",
    }
    assert "nothing billed" in checks[f"model {CORE}"].detail
    assert "us-east-1" in checks[f"model {UPSCALE}"].detail  # where the profile routes
    assert "configured 60/min" in checks[f"quota {CORE}"].detail


def test_model_access_denied_names_the_iam_resources(doctor: Callable[..., list[Check]]) -> None:
    check = by_name(doctor({"denied_models": ("stability.stable-fast-upscale-v1:0",)}))[
        f"model {UPSCALE}"
    ]
    assert check.status == "fail"
    assert "bedrock:InvokeModel" in check.fix
    assert f"inference-profile/{UPSCALE}" in check.fix
    assert "ops/iam-policy.json" in check.fix


def test_a_missing_subscription_is_told_apart(doctor: Callable[..., list[Check]]) -> None:
    checks = by_name(doctor({"unsubscribed_models": ("stability.stable-fast-upscale-v1:0",)}))
    check = checks[f"model {UPSCALE}"]
    assert check.status == "fail"
    assert "Marketplace" in check.detail
    assert "aws-marketplace:Subscribe" in check.fix
    assert checks[f"model {CORE}"].status == "ok"


def test_a_bare_image_service_id_is_told_to_use_its_profile(
    start_emulator: Any, s3_url: str
) -> None:
    settings = Settings(
        bedrock_endpoint_url=start_emulator(),
        s3_endpoint_url=s3_url,
        _env_file=None,  # type: ignore[call-arg]
    )
    check = Doctor(settings).model_access("stability.stable-fast-upscale-v1:0")
    assert check.status == "fail"
    assert "use us.stability.stable-fast-upscale-v1:0" in check.fix


def test_a_missing_bucket_and_a_wrong_region_fail_with_fixes(
    doctor: Callable[..., list[Check]],
) -> None:
    checks = by_name(doctor(s3_bucket="no-such-bucket"))
    for kind in ("images", "uploads"):
        assert checks[f"s3 {kind}"].status == "fail"
        assert "does not exist" in checks[f"s3 {kind}"].detail
        assert "IMAGEGEN_S3_BUCKET" in checks[f"s3 {kind}"].fix
    checks = by_name(doctor(aws_region="eu-west-1"))
    assert checks["region"].status == "fail"
    assert "us-east-1, us-east-2, us-west-2" in checks["region"].fix


def test_no_credentials_stops_early(
    doctor: Callable[..., list[Check]], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    checks = doctor()
    assert [c.name for c in checks] == ["credentials", "region"]
    assert checks[0].status == "fail"
    assert "AWS_PROFILE" in checks[0].fix
