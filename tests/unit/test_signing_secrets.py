"""Signing secrets are never made on a read: a missing one holds deliveries (loudly), a setting
survives a Redis that comes back empty, and a changed one is logged and counted."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from imagegen.errors import SigningSecretMissingError, SigningSecretSettingError
from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.s3 import make_s3_client
from imagegen.settings import Settings
from imagegen.store.jobs import JobStore
from imagegen.store.signing import fingerprint, new_secret, signing_secrets
from imagegen.store.tenants import ApiKeys
from producer.client import Client
from tests.support import Receiver, independent_signature_check
from worker.webhooks import WebhookSender


@dataclass
class Setup:
    redis: Any
    settings: Settings
    client: Client
    store: JobStore
    receiver: Receiver

    def sender(self, **changes: Any) -> WebhookSender:
        settings = self.settings.model_copy(update=changes)
        return WebhookSender(self.redis, settings, make_s3_client(settings))

    def finished_job(self, tenant: str | None = None) -> str:
        """A succeeded job with a webhook to the receiver; returns its delivery id."""
        record = self.client.submit("a", webhook_url=self.receiver.url("/hook"), tenant=tenant)
        self.store.claim(record.job_id, "worker", 60_000)
        self.store.finish(record.job_id, "worker", JobStatus.SUCCEEDED, {})
        return f"{record.job_id}:job.succeeded"


@pytest.fixture
def setup(any_redis: Any, settings: Settings) -> Iterator[Setup]:
    settings = settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allowed_hosts": ("127.0.0.1",),
            "webhook_timeout_s": 2.0,
        }
    )
    receiver = Receiver()
    yield Setup(
        redis=any_redis,
        settings=settings,
        client=Client(settings, redis_client=any_redis),
        store=JobStore(any_redis, settings.job_retention_s, settings.webhook_handoff_grace_s),
        receiver=receiver,
    )
    receiver.stop()


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reading_with_none_stored_raises_and_makes_nothing(setup: Setup) -> None:
    secrets = setup.client.signing_secrets
    with pytest.raises(SigningSecretMissingError, match="webhook-secret --create"):
        secrets.active()
    with pytest.raises(SigningSecretMissingError, match="--restore"):
        setup.client.signing_secrets_for("acme").current()
    assert setup.redis.get(keys.WEBHOOK_SECRETS_KEY) is None
    assert setup.redis.get(keys.webhook_secrets_key("acme")) is None


def test_create_stores_one_once(setup: Setup) -> None:
    secrets = setup.client.signing_secrets
    made = secrets.create()
    assert made is not None
    assert made.startswith("whsec_")
    assert secrets.create() is None  # kept as it is
    assert secrets.active() == [made]


def test_a_delivery_without_a_secret_waits_unsent_then_goes_once_one_is_restored(
    setup: Setup,
) -> None:
    held = setup.client.signing_secrets.create()
    assert held is not None
    sender = setup.sender()
    first = setup.finished_job()
    assert sender.deliver(first).outcome == "delivered"
    setup.redis.delete(keys.WEBHOOK_SECRETS_KEY)  # what a Redis that came back empty does
    waiting_before = counted("imagegen_worker_webhook_secret_missing_total", scope="global")
    delivery_id = setup.finished_job()
    assert sender.deliver(delivery_id).outcome == "waiting_for_secret"
    assert len(setup.receiver.received("/hook")) == 1  # nothing sent
    state = setup.redis.hgetall(keys.webhook_key(delivery_id))
    assert (state["state"], state["attempts"]) == ("pending", "0")
    due_s = setup.redis.zscore(keys.WEBHOOKS_DUE_KEY, delivery_id) / 1000 - time.time()
    assert 15 < due_s < 45
    assert setup.redis.get(keys.WEBHOOK_SECRETS_KEY) is None  # nothing made behind its back
    after = counted("imagegen_worker_webhook_secret_missing_total", scope="global")
    assert after == waiting_before + 1
    setup.client.signing_secrets.create(held)  # `imagegen webhook-secret --restore`
    assert sender.deliver(delivery_id).outcome == "delivered"
    request = setup.receiver.received("/hook")[-1]
    assert independent_signature_check(held, request["headers"], request["body"])


def test_a_tenants_delivery_waits_for_its_own_secret(setup: Setup) -> None:
    setup.client.signing_secrets.create()  # the global one is no stand-in
    delivery_id = setup.finished_job(tenant="acme")
    assert setup.sender().deliver(delivery_id).outcome == "waiting_for_secret"
    assert setup.receiver.received("/hook") == []


def test_a_tenants_first_api_key_makes_its_secret_and_later_keys_keep_it(setup: Setup) -> None:
    api_keys = ApiKeys(setup.redis)
    api_keys.create("acme")
    secret = setup.client.signing_secrets_for("acme").current()
    api_keys.create("acme")
    assert setup.client.signing_secrets_for("acme").active() == [secret]


def test_a_secret_from_the_settings_signs_and_survives_an_emptied_redis(setup: Setup) -> None:
    secret = new_secret()
    configured = setup.settings.model_copy(update={"webhook_secret": SecretStr(secret)})
    sender = WebhookSender(setup.redis, configured, make_s3_client(configured))
    setup.redis.flushdb()
    delivery_id = setup.finished_job()
    assert sender.deliver(delivery_id).outcome == "delivered"
    [request] = setup.receiver.received("/hook")
    assert independent_signature_check(secret, request["headers"], request["body"])
    secrets = signing_secrets(setup.redis, configured)
    with pytest.raises(SigningSecretSettingError, match="IMAGEGEN_WEBHOOK_SECRET"):
        secrets.rotate()
    with pytest.raises(SigningSecretSettingError):
        secrets.create()
    assert setup.redis.get(keys.WEBHOOK_SECRETS_KEY) is None


def test_a_setting_holds_two_secrets_during_a_rotation(setup: Setup) -> None:
    new, old = new_secret(), new_secret()
    sender = setup.sender(webhook_secret=SecretStr(f"{new} {old}"))
    assert sender.deliver(setup.finished_job()).outcome == "delivered"
    [request] = setup.receiver.received("/hook")
    for secret in (new, old):
        assert independent_signature_check(secret, request["headers"], request["body"])


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("whsec_change-me", "base64"),
        ("change-me", "must start with whsec_"),
        ("whsec_" + "QUJD", r"24\+ random bytes"),
        ("   ", "empty"),
    ],
)
def test_a_bad_secret_setting_is_refused_naming_the_field(value: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rf"webhook_secret.*{rule}"):
        Settings(webhook_secret=value, _env_file=None)  # type: ignore[call-arg]


def test_a_secret_replaced_behind_the_receivers_back_is_logged_and_counted(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    before = setup.client.signing_secrets.create()
    assert before is not None
    sender = setup.sender()
    assert sender.deliver(setup.finished_job()).outcome == "delivered"
    replaced = counted("imagegen_worker_webhook_secret_changes_total", how="replaced")
    setup.redis.delete(keys.WEBHOOK_SECRETS_KEY)
    after = setup.client.signing_secrets.create()
    assert after is not None
    with caplog.at_level(logging.WARNING, logger="imagegen.webhooks"):
        assert sender.deliver(setup.finished_job()).outcome == "delivered"
        assert sender.deliver(setup.finished_job()).outcome == "delivered"  # counted once
    assert counted("imagegen_worker_webhook_secret_changes_total", how="replaced") == replaced + 1
    [line] = [r for r in caplog.records if "replaced" in r.getMessage()]
    assert line.levelno == logging.ERROR
    assert line.previous_fingerprint == fingerprint(before)
    assert line.fingerprint == fingerprint(after)


def test_a_rotation_is_logged_as_one_not_counted_as_a_replacement(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.client.signing_secrets.create()
    sender = setup.sender()
    assert sender.deliver(setup.finished_job()).outcome == "delivered"
    replaced = counted("imagegen_worker_webhook_secret_changes_total", how="replaced")
    rotated = counted("imagegen_worker_webhook_secret_changes_total", how="rotated")
    setup.client.signing_secrets.rotate()
    with caplog.at_level(logging.WARNING, logger="imagegen.webhooks"):
        assert sender.deliver(setup.finished_job()).outcome == "delivered"
    assert counted("imagegen_worker_webhook_secret_changes_total", how="rotated") == rotated + 1
    assert counted("imagegen_worker_webhook_secret_changes_total", how="replaced") == replaced
    assert any("rotated" in r.getMessage() for r in caplog.records)


def test_a_tenant_reading_its_secrets_over_the_api_never_makes_one(setup: Setup) -> None:
    from fastapi.testclient import TestClient

    from producer.api.app import create_app

    _, key = ApiKeys(setup.redis).create("acme")
    setup.redis.delete(keys.webhook_secrets_key("acme"))  # lost with its Redis
    app = create_app(setup.settings, redis_client=setup.redis)
    with TestClient(app) as http:
        headers = {"Authorization": f"Bearer {key}"}
        assert http.get("/v1/webhook-secrets", headers=headers).json()["secrets"] == []
        assert setup.redis.get(keys.webhook_secrets_key("acme")) is None
        rotated = http.post("/v1/webhook-secrets/rotate", headers=headers).json()["secrets"]
    assert rotated == setup.client.signing_secrets_for("acme").active()


# -- the command ---------------------------------------------------------------------------


def imagegen(redis_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", "webhook-secret", *args],
        env={"IMAGEGEN_REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_shows_creates_restores_and_refuses_clearly(
    real_redis: Any, real_redis_url: str
) -> None:
    shown = imagegen(real_redis_url)
    assert shown.returncode == 4, shown.stderr
    assert "no webhook signing secret for jobs without a tenant" in shown.stderr
    assert real_redis.get(keys.WEBHOOK_SECRETS_KEY) is None
    made = imagegen(real_redis_url, "--create")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("whsec_")
    assert imagegen(real_redis_url).stdout == made.stdout
    again = imagegen(real_redis_url, "--create")
    assert again.returncode == 2
    assert "already has a signing secret" in again.stderr
    held = new_secret()
    restored = imagegen(real_redis_url, "--tenant", "acme", "--restore", stdin=held + "\n")
    assert restored.returncode == 0, restored.stderr
    assert imagegen(real_redis_url, "--tenant", "acme").stdout.strip() == held
    bad = imagegen(real_redis_url, "--tenant", "beta", "--restore", stdin="whsec_change-me")
    assert bad.returncode == 2
    assert "base64" in bad.stderr
    generated = imagegen(real_redis_url, "--generate")
    assert generated.stdout.strip().startswith("whsec_")
    assert generated.stdout.strip() not in (made.stdout.strip(), held)
