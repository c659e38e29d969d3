"""Attack: a tenant's webhook endpoints trickle their answers a byte at a time, to hold the
webhook workers. Each attempt ends at the total deadline, and another tenant's webhook still
arrives within seconds."""

from __future__ import annotations

import json
import time

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from producer.client import Client
from tests.support import Receiver, TrickleServer

pytestmark = pytest.mark.integration

DEADLINE_S = 2.0  # IMAGEGEN_WEBHOOK_TIMEOUT_S of the security stack


def test_trickling_endpoints_hold_nothing_past_the_deadline(
    secure_stack: Stack, receiver: Receiver, tenant_keys: dict[str, str]
) -> None:
    slow = [TrickleServer(in_headers=index % 2 == 0) for index in range(4)]
    try:
        with httpx.Client(base_url=secure_stack.urls["api"], timeout=30) as api:
            mallory = {"Authorization": f"Bearer {tenant_keys['mallory']}"}
            hogs = [
                api.post(
                    "/v1/jobs",
                    json={
                        "request": {"prompt": "hold the workers"},
                        "webhook_url": f"http://127.0.0.1:{server.port}/hook",
                    },
                    headers=mallory,
                ).json()
                for server in slow
            ]
            time.sleep(0.5)  # the slow deliveries are under way
            alice = {"Authorization": f"Bearer {tenant_keys['alice']}", "Prefer": "wait=20"}
            job = api.post(
                "/v1/jobs",
                json={"request": {"prompt": "mine"}, "webhook_url": receiver.url("/alice-slow")},
                headers=alice,
            ).json()
            assert job["status"] == "succeeded"
            finished = time.monotonic()
            while not receiver.received("/alice-slow") and time.monotonic() - finished < 15:
                time.sleep(0.1)
            assert receiver.received("/alice-slow"), "the other tenant's webhook never came"
            assert time.monotonic() - finished < 3 * DEADLINE_S + 2
        with Client(secure_stack.settings()) as client:
            deadline = time.monotonic() + 20
            attempts = []
            while time.monotonic() < deadline:
                records = [client.get(hog["job_id"]) for hog in hogs]
                attempts = [a for r in records for d in r.webhooks for a in d.log]
                if len(attempts) >= len(hogs):
                    break
                time.sleep(0.2)
        assert len(attempts) >= len(hogs)
        for attempt in attempts:
            assert attempt.error is not None
            assert "timeout" in attempt.error
            assert attempt.latency_ms is not None
            assert attempt.latency_ms < (DEADLINE_S + 0.5) * 1000, json.dumps(
                attempt.model_dump(mode="json")
            )
    finally:
        for server in slow:
            server.close()
