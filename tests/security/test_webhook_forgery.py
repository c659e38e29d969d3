"""Attack: a tenant signs a fake ``job.succeeded`` for another tenant's job with its own
secret. Each tenant's webhooks are signed with its own secrets, so the forgery never verifies,
and no tenant can read or rotate another's."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx2 as httpx
import pytest
from standardwebhooks.webhooks import Webhook

from devstack.stack import Stack
from imagegen.errors import WebhookVerificationError
from producer.webhooks import verify
from tests.support import Receiver

pytestmark = pytest.mark.integration


def secrets(api: httpx.Client, key: str) -> list[str]:
    response = api.get("/v1/webhook-secrets", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return list(response.json()["secrets"])


def test_one_tenant_cannot_forge_another_tenants_webhooks(
    secure_stack: Stack, receiver: Receiver, tenant_keys: dict[str, str]
) -> None:
    with httpx.Client(base_url=secure_stack.urls["api"], timeout=30) as api:
        alice, mallory = tenant_keys["alice"], tenant_keys["mallory"]
        job = api.post(
            "/v1/jobs",
            json={"request": {"prompt": "a lighthouse"}, "webhook_url": receiver.url("/alice")},
            headers={"Authorization": f"Bearer {alice}", "Prefer": "wait=20"},
        ).json()
        assert job["status"] == "succeeded"
        alice_secrets, mallory_secrets = secrets(api, alice), secrets(api, mallory)
        assert not set(alice_secrets) & set(mallory_secrets)

        deadline = time.monotonic() + 20
        while not receiver.received("/alice") and time.monotonic() < deadline:
            time.sleep(0.1)
        [real] = receiver.received("/alice")
        assert (
            verify(real["headers"], real["body"], alice_secrets)["data"]["job_id"] == job["job_id"]
        )

        # Mallory signs a success for Alice's job, pointing at an image of her own.
        forged_body = json.dumps(
            {
                "type": "job.succeeded",
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {"job_id": job["job_id"], "image_url": "https://evil.example/x.png"},
            }
        )
        now = datetime.now(UTC)
        forged = {
            "webhook-id": f"msg_{job['job_id']}_succeeded",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(mallory_secrets[0]).sign(
                f"msg_{job['job_id']}_succeeded", now, forged_body
            ),
        }
        with pytest.raises(WebhookVerificationError, match="no signature matches"):
            verify(forged, forged_body, alice_secrets)

        # Rotating is per tenant: Mallory's rotation leaves Alice's secrets alone.
        rotated = api.post(
            "/v1/webhook-secrets/rotate", headers={"Authorization": f"Bearer {mallory}"}
        )
        assert rotated.status_code == 200
        assert secrets(api, alice) == alice_secrets
