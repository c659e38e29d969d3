"""One real stack for the attacks: Redis, a worker, the API, the emulator, S3 and a webhook
receiver on this machine. Every attack is sent as an attacker would: raw Redis writes or plain
HTTP, never through our client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from devstack.stack import Stack
from imagegen.redis import keys
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.support import Receiver

SECURITY_STACK_DB = 1
LOCAL_WEBHOOKS = {
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    "IMAGEGEN_WEBHOOK_HANDOFF_GRACE_S": "5",
    # Short, so the slow-receiver attack is quick to replay: the bound is what is tested.
    "IMAGEGEN_WEBHOOK_TIMEOUT_S": "2",
}
ADMIN_TOKEN = "security-stack-admin-token-0123456789"
HEADER_TIMEOUT_S = 2.0
SECURE_API = {
    "IMAGEGEN_API_ADMIN_TOKEN": ADMIN_TOKEN,
    # Short, so slow clients are cut quickly in the replay: the bound is what is tested.
    "IMAGEGEN_API_HEADER_TIMEOUT_S": f"{HEADER_TIMEOUT_S:g}",
}


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("security"),
        SECURITY_STACK_DB,
        worker_concurrency=4,
        extra_env={**FAST_RETRIES, **LOCAL_WEBHOOKS},
    )
    running.start_api(extra_env=SECURE_API)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture
def fresh_brake(secure_stack: Stack) -> Iterator[None]:
    """No failed authentications counted for anyone before or after the test (every attack
    comes from 127.0.0.1, and the brake counts per client)."""

    def forget() -> None:
        with redis.Redis.from_url(secure_stack.settings().redis_url) as store:
            for key in store.scan_iter(keys.auth_failures_key("*")):
                store.delete(key)

    forget()
    yield
    forget()


@pytest.fixture(scope="session")
def tenant_keys(secure_stack: Stack) -> dict[str, str]:
    """An API key for each of two tenants."""
    with Client(secure_stack.settings()) as client:
        return {tenant: client.api_keys.create(tenant)[1] for tenant in ("alice", "mallory")}
