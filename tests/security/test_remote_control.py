"""Attack: send Celery remote-control commands through Redis, as anyone who can write to it
could. Commands that would change a worker (shutdown, add_consumer on a queue the gate does not
check, revoke, pool_restart) are refused and change nothing; ping and Flower's inspection still
answer."""

from __future__ import annotations

import time

import pytest
from celery import Celery

from devstack.stack import Stack
from imagegen.health import answering_workers
from imagegen.messages import QUEUES
from imagegen.records import JobStatus
from producer.client import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def control(secure_stack: Stack) -> Celery:
    app = Celery("attacker", broker=secure_stack.env["IMAGEGEN_REDIS_URL"])
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=True)
    return app


def test_commands_that_change_a_worker_are_refused(secure_stack: Stack, control: Celery) -> None:
    url = secure_stack.env["IMAGEGEN_REDIS_URL"]
    [worker] = answering_workers(url)
    replies = control.control.add_consumer("unchecked", destination=[worker], reply=True)
    assert "not allowed" in replies[0][worker]["error"]
    control.control.broadcast("pool_restart", destination=[worker])
    control.control.revoke("some-job", destination=[worker])
    control.control.broadcast("shutdown", destination=[worker])
    time.sleep(3)  # what a shutdown takes to begin
    assert secure_stack.processes.failed() == []
    assert answering_workers(url) == [worker]
    inspect = control.control.inspect(destination=[worker], timeout=2)
    assert sorted(queue["name"] for queue in inspect.active_queues()[worker]) == sorted(QUEUES)
    assert "some-job" not in inspect.revoked()[worker]
    with Client(secure_stack.settings()) as client:
        record = client.wait(client.submit("a lighthouse after the commands").job_id, 30)
    assert record.status is JobStatus.SUCCEEDED


def test_flowers_inspection_still_answers(secure_stack: Stack, control: Celery) -> None:
    [worker] = answering_workers(secure_stack.env["IMAGEGEN_REDIS_URL"])
    inspect = control.control.inspect(destination=[worker], timeout=2)
    # What Flower's inspector asks each worker for.
    for method in (
        "stats",
        "active_queues",
        "registered",
        "scheduled",
        "active",
        "reserved",
        "revoked",
        "conf",
    ):
        answer = getattr(inspect, method)()[worker]
        assert not (isinstance(answer, dict) and "error" in answer), (method, answer)
    assert control.control.ping(destination=[worker], timeout=2) == [{worker: {"ok": "pong"}}]
