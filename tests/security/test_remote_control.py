"""Attack: send Celery remote-control commands through Redis, as anyone who can write to it
could. Commands that would change a worker (shutdown, add_consumer on a queue the gate does not
check, revoke, pool_restart) are refused and change nothing; ping and Flower's inspection still
answer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery import Celery

from devstack.stack import Stack
from imagegen.health import answering_workers
from imagegen.messages import QUEUES
from imagegen.records import JobStatus
from producer.client import Client

pytestmark = pytest.mark.integration

# Replies come as soon as the one worker asked answers; the long wait only matters on a loaded
# machine, where a worker busy starting up answers its first inspection after a few seconds.
_REPLY_TIMEOUT_S = 15.0


def the_worker(url: str) -> str:
    """The stack's one worker, once it answers a ping (a loaded machine can take a while)."""
    deadline = time.monotonic() + _REPLY_TIMEOUT_S
    while not (workers := answering_workers(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    [worker] = workers
    return worker


def asked(inspect: Any, method: str, worker: str) -> Any:
    """One worker's answer to an inspection. A broadcast goes out over pub/sub, which keeps
    nothing: one sent while the worker's control connection is reconnecting is never heard, so
    an unanswered inspection is asked again (three times at most)."""
    for _ in range(3):
        if (replies := getattr(inspect, method)()) and worker in replies:
            return replies[worker]
    raise AssertionError(f"{worker} never answered {method}")


@pytest.fixture
def control(secure_stack: Stack) -> Celery:
    app = Celery("attacker", broker=secure_stack.env["IMAGEGEN_REDIS_URL"])
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=True)
    return app


def test_commands_that_change_a_worker_are_refused(secure_stack: Stack, control: Celery) -> None:
    url = secure_stack.env["IMAGEGEN_REDIS_URL"]
    worker = the_worker(url)
    replies = control.control.add_consumer("unchecked", destination=[worker], reply=True)
    assert "not allowed" in replies[0][worker]["error"]
    control.control.broadcast("pool_restart", destination=[worker])
    control.control.revoke("some-job", destination=[worker])
    control.control.broadcast("shutdown", destination=[worker])
    time.sleep(3)  # what a shutdown takes to begin
    assert secure_stack.processes.failed() == []
    assert the_worker(url) == worker
    inspect = control.control.inspect(destination=[worker], timeout=_REPLY_TIMEOUT_S)
    queues = asked(inspect, "active_queues", worker)
    assert sorted(queue["name"] for queue in queues) == sorted(QUEUES)
    assert "some-job" not in asked(inspect, "revoked", worker)
    with Client(secure_stack.settings()) as client:
        record = client.wait(client.submit("a lighthouse after the commands").job_id, 30)
    assert record.status is JobStatus.SUCCEEDED


def test_flowers_inspection_still_answers(secure_stack: Stack, control: Celery) -> None:
    worker = the_worker(secure_stack.env["IMAGEGEN_REDIS_URL"])
    inspect = control.control.inspect(destination=[worker], timeout=_REPLY_TIMEOUT_S)
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
        answer = asked(inspect, method, worker)
        assert not (isinstance(answer, dict) and "error" in answer), (method, answer)
    assert control.control.ping(destination=[worker], timeout=_REPLY_TIMEOUT_S) == [
        {worker: {"ok": "pong"}}
    ]
