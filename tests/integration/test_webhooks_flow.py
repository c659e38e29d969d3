"""Webhooks through the real service: a job worker, a webhook worker, the sweeper, a receiver."""

from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.support import Receiver, independent_signature_check

pytestmark = pytest.mark.integration

WEBHOOK_STACK_DB = 10
WEBHOOK_ENV = {
    **FAST_RETRIES,
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    "IMAGEGEN_WEBHOOK_RETRY_SCHEDULE_S": "[0, 0.3, 0.3, 0.3, 0.3]",
    "IMAGEGEN_WEBHOOK_JITTER_FRACTION": "0",
    "IMAGEGEN_WEBHOOK_SWEEP_INTERVAL_S": "0.2",
    "IMAGEGEN_WEBHOOK_HANDOFF_GRACE_S": "2",
    # Deliveries go through the webhooks queue, to a worker of their own (the job workers do
    # not send a finished job's webhooks themselves).
    "IMAGEGEN_WEBHOOK_SEND_THREADS": "0",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def hook_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("webhooks"),
        WEBHOOK_STACK_DB,
        worker_concurrency=4,
        workers=(("jobs", "interactive,batch"), ("hooks", "webhooks")),
        extra_env=WEBHOOK_ENV,
    )
    yield running
    running.stop()


@pytest.fixture
def client(hook_stack: Stack) -> Iterator[Client]:
    settings = hook_stack.settings().model_copy(
        update={"webhook_allow_http": True, "webhook_allowed_hosts": ("127.0.0.1",)}
    )
    with Client(settings) as c:
        yield c


def wait_for(condition: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_job_calls_back_with_a_signed_event_and_a_working_image_link(
    client: Client, receiver: Receiver
) -> None:
    job = client.submit(
        "a lighthouse", webhook_url=receiver.url("/done"), metadata={"order": "A-17"}
    )
    wait_for(lambda: receiver.received("/done"))
    [request] = receiver.received("/done")
    assert independent_signature_check(
        client.signing_secrets.current(), request["headers"], request["body"]
    )
    event = json.loads(request["body"])
    assert event["type"] == "job.succeeded"
    data = event["data"]
    record = client.get(job.job_id)
    assert (data["job_id"], data["s3_key"], data["seed"]) == (
        job.job_id,
        record.s3_key,
        record.seed,
    )
    assert data["metadata"] == {"order": "A-17"}
    with urllib.request.urlopen(data["image_url"], timeout=10) as response:
        assert hashlib.sha256(response.read()).hexdigest() == record.sha256
    wait_for(lambda: client.get(job.job_id).webhooks[0].state == "delivered")


def test_a_receiver_down_for_a_while_gets_the_event_once(
    client: Client, receiver: Receiver
) -> None:
    receiver.script("/flaky", [(503, {}, 0), (500, {}, 0), (502, {}, 0), (200, {}, 0)])
    job = client.submit("a windmill", webhook_url=receiver.url("/flaky"))
    wait_for(
        lambda: (
            client.get(job.job_id).webhooks
            and client.get(job.job_id).webhooks[0].state == "delivered"
        )
    )
    requests = receiver.received("/flaky")
    assert len(requests) == 4
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1
    [delivery] = client.get(job.job_id).webhooks
    assert [e.status for e in delivery.log] == [503, 500, 502, 200]


def test_a_lost_delivery_message_is_sent_by_the_sweeper(
    client: Client, receiver: Receiver, hook_stack: Stack
) -> None:
    """The webhook worker is down and the queued message is lost: the outbox still delivers."""
    hook_stack.processes.stop("hooks", signal.SIGTERM)
    redis = client._redis
    try:
        job = client.submit("a harbour", webhook_url=receiver.url("/outbox"))
        wait_for(lambda: client.get(job.job_id).status is JobStatus.SUCCEEDED)
        assert redis.llen("webhooks") >= 1
        redis.delete("webhooks")  # the message is gone
        wait_for(lambda: redis.llen("webhooks") >= 1, timeout_s=10)  # the sweeper put it back
    finally:
        hook_stack.start_worker("hooks", "webhooks")
    wait_for(lambda: receiver.received("/outbox"))
    assert len(receiver.received("/outbox")) == 1
