"""``imagegen doctor`` against the emulator and a real-HTTP S3 (moto's server), with each
failure simulated: what it reports, and the fix it prints."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import fakeredis
import pytest
import redis
from moto.server import ThreadedMotoServer

from imagegen.settings import Settings
from imagegen.store.signing import new_secret, signing_secrets
from producer.doctor import Check, Doctor
from producer.doctor_redis import persistence_check, signing_secret_check

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
    checks = by_name(doctor(webhook_secret=new_secret()))
    # fakeredis refuses CONFIG GET, as managed services do: persistence is not checked.
    assert checks.pop("redis persistence").status == "skip"
    # No worker ran yet, so S3 holds no mark of Redis's epoch.
    assert checks.pop("redis data loss").status == "skip"
    assert {c.status for c in checks.values()} == {"ok"}, checks
    assert "from IMAGEGEN_WEBHOOK_SECRET" in checks["webhook secret"].detail
    assert set(checks) == {
        "credentials",
        "region",
        f"model {CORE}",
        f"model {UPSCALE}",
        "s3 images",
        "s3 uploads",
        "redis",
        "webhook secret",
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


@pytest.fixture
def refusing_sts() -> Iterator[str]:
    """An STS endpoint that answers every call as AWS does a key it does not know."""
    body = (
        b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        b"<Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token "
        b"included in the request is invalid.</Message></Error><RequestId>1</RequestId>"
        b"</ErrorResponse>"
    )

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(403)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def on_aws(s3_url: str) -> Doctor:
    """The doctor as it runs against AWS itself (no local Bedrock endpoint)."""
    settings = Settings(s3_endpoint_url=s3_url, _env_file=None)  # type: ignore[call-arg]
    assert settings.bedrock_endpoint_url is None
    return Doctor(settings)


@pytest.mark.parametrize(
    ("endpoint", "seen"),
    [
        (f"http://127.0.0.1:{free_port()}", "connection refused"),
        ("http://sts.no-such-host.invalid", "DNS cannot resolve its name"),
    ],
    ids=["a-closed-port", "an-unknown-host"],  # the same ids in every process (the port is not)
)
def test_an_unreachable_endpoint_is_a_network_failure_not_the_credentials(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, endpoint: str, seen: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", endpoint)
    checks = on_aws(s3_url).run([CORE])
    assert [c.name for c in checks] == ["network", "region"]
    network = checks[0]
    assert network.status == "fail"
    assert f"STS is not reachable ({endpoint}: {seen})" in network.detail
    assert "were not checked" in network.detail
    assert "DNS, a proxy" in network.fix
    assert "renew" not in network.fix


def test_credentials_aws_refuses_are_blamed(
    s3_url: str, monkeypatch: pytest.MonkeyPatch, refusing_sts: str
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", refusing_sts)
    [credentials, _] = on_aws(s3_url).run([CORE])
    assert (credentials.name, credentials.status) == ("credentials", "fail")
    assert "STS refused them: An error occurred (InvalidClientTokenId)" in credentials.detail
    assert "renew or replace the credentials" in credentials.fix


def test_an_unreachable_bedrock_endpoint_is_named_as_such(s3_url: str) -> None:
    settings = Settings(
        bedrock_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_endpoint_url=s3_url,
        _env_file=None,  # type: ignore[call-arg]
    )
    check = Doctor(settings).model_access(CORE)
    assert check.status == "fail"
    assert "bedrock-runtime is not reachable" in check.detail
    assert "connection refused" in check.detail
    assert "IMAGEGEN_BEDROCK_ENDPOINT_URL" in check.fix


# -- what Redis keeps, on real servers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "seen"),
    [
        (("--save", "", "--appendonly", "no"), "warn", "Redis keeps nothing on disk"),
        (("--save", "3600 1", "--appendonly", "no"), "warn", "snapshots only (save 3600 1)"),
        (("--save", "", "--appendonly", "yes"), "ok", "append-only file on"),
    ],
)
def test_the_doctor_says_what_redis_keeps_on_disk(
    start_redis_server: Callable[..., str], args: tuple[str, ...], status: str, seen: str
) -> None:
    client = redis.Redis.from_url(start_redis_server(*args), decode_responses=True)
    check = persistence_check(client)
    assert (check.status, check.name) == (status, "redis persistence")
    assert seen in check.detail
    assert ("appendonly yes" in check.fix) == (status == "warn")


def test_a_redis_that_refuses_config_is_not_checked_and_says_so(
    start_redis_server: Callable[..., str],
) -> None:
    url = start_redis_server("--save", "", "--appendonly", "no")
    admin = redis.Redis.from_url(url, decode_responses=True)
    admin.acl_setuser(
        "app", enabled=True, passwords=["+app-password"], keys=["*"], commands=["+@all", "-config"]
    )
    client = redis.Redis.from_url(url.replace("//", "//app:app-password@"), decode_responses=True)
    check = persistence_check(client)
    assert check.status == "skip"
    assert check.detail.startswith("could not check: Redis refused CONFIG GET")


def test_the_doctor_warns_when_jobs_without_a_tenant_have_no_secret() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    missing = signing_secret_check(client, settings)
    assert missing.status == "warn"
    assert "their webhooks wait" in missing.detail
    assert "IMAGEGEN_WEBHOOK_SECRET" in missing.fix
    assert client.keys("*") == []  # the check made nothing
    signing_secrets(client, settings).create()
    stored = signing_secret_check(client, settings)
    assert (stored.status, stored.detail.split(" (")[0]) == ("ok", "kept in Redis")
