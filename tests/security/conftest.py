"""One real stack for the attacks: Redis, a worker, the API, the emulator, S3 and a webhook
receiver on this machine. Every attack is sent as an attacker would: raw Redis writes or plain
HTTP, never through our client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.support import Receiver

SECURITY_STACK_DB = 9
LOCAL_WEBHOOKS = {
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    "IMAGEGEN_WEBHOOK_HANDOFF_GRACE_S": "5",
    # Short, so the slow-receiver attack is quick to replay: the bound is what is tested.
    "IMAGEGEN_WEBHOOK_TIMEOUT_S": "2",
}


@pytest.fixture(scope="session")
def secure_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("security"),
        SECURITY_STACK_DB,
        worker_concurrency=4,
        extra_env={**FAST_RETRIES, **LOCAL_WEBHOOKS},
    )
    running.start_api()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tenant_keys(secure_stack: Stack) -> dict[str, str]:
    """An API key for each of two tenants."""
    with Client(secure_stack.settings()) as client:
        return {tenant: client.api_keys.create(tenant)[1] for tenant in ("alice", "mallory")}
