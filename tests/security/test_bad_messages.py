"""Attack: push malformed messages onto the job queues with plain redis-py, as anyone who can
write to Redis could. Each one is quarantined with its reason; the worker stays up and the next
good job finishes within seconds; no message body reaches the worker's log."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis

from devstack.stack import Stack
from imagegen.messages import GENERATE_TASK, task_message
from imagegen.records import JobStatus
from imagegen.store.quarantine import Quarantine
from producer.client import Client

pytestmark = pytest.mark.integration

SECRET_PROMPT = "the-secret-prompt-words"


def good_envelope(job_id: str = "J-attack") -> dict[str, object]:
    return json.loads(task_message(GENERATE_TASK, job_id, [job_id], "interactive"))


def with_body(body: object) -> str:
    envelope = good_envelope()
    envelope["body"] = json.dumps(body)
    return json.dumps(envelope)


def without(section: str, name: str) -> str:
    envelope = good_envelope()
    part = envelope[section]
    assert isinstance(part, dict)
    del part[name]
    return json.dumps(envelope)


def base64_body(text: str) -> str:
    envelope = good_envelope()
    properties = envelope["properties"]
    assert isinstance(properties, dict)
    properties["body_encoding"] = "base64"
    envelope["body"] = text
    return json.dumps(envelope)


# What the review pushed, and the reason each must be set aside with.
ATTACKS = {
    "body null": (with_body(None), "bad-body"),
    "body {a:1}": (with_body({"a": 1}), "bad-body"),
    "body a bare string": (with_body("hello"), "bad-body"),
    "no content-type": (
        json.dumps({k: v for k, v in good_envelope().items() if k != "content-type"}),
        "bad-content-type",
    ),
    "no delivery tag": (without("properties", "delivery_tag"), "bad-envelope"),
    "no id header": (without("headers", "id"), "bad-arguments"),
    "not JSON": ("{not json", "not-json"),
    "bad base64": (base64_body("!!!not-base64!!!"), "bad-body"),
    "headers not an object": (
        json.dumps({**good_envelope(), "headers": "x"}),
        "bad-envelope",
    ),
    "a list": ("[1, 2, 3]", "not-an-object"),
    "a string": ('"just a string"', "not-an-object"),
    "a number": ("42", "not-an-object"),
    "NaN in the body": (with_body([["J-attack"], {"x": float("nan")}, {}]), "not-json"),
    "unknown task": (
        json.dumps({**good_envelope(), "headers": {**good_envelope()["headers"], "task": "x"}}),  # type: ignore[dict-item]
        "unknown-task",
    ),
    "prompt in a refused message": (
        with_body([["J-attack"], {"job": {"request": {"prompt": SECRET_PROMPT}}, "x": 1}, {}]),
        "bad-arguments",
    ),
}


def test_malformed_messages_are_quarantined_and_the_worker_keeps_working(
    secure_stack: Stack,
) -> None:
    raw = redis.Redis.from_url(secure_stack.env["IMAGEGEN_REDIS_URL"])
    for message, _ in ATTACKS.values():
        raw.lpush("interactive", message)
    with Client(secure_stack.settings()) as client:
        started = time.monotonic()
        record = client.wait(client.submit("a lighthouse after the attack").job_id, 30)
        assert record.status is JobStatus.SUCCEEDED
        assert time.monotonic() - started < 15
        deadline = time.monotonic() + 15
        quarantine = Quarantine(client.jobs.redis)
        while quarantine.count() < len(ATTACKS) and time.monotonic() < deadline:
            time.sleep(0.2)
        reasons = sorted(entry.reason for entry in quarantine.list(100))
    assert reasons == sorted(reason for _, reason in ATTACKS.values())
    assert secure_stack.processes.failed() == []
    log = (secure_stack.processes.log_dir / "worker.log").read_text()
    assert "message quarantined" in log
    assert SECRET_PROMPT not in log
    assert "Unrecoverable error" not in log


def test_a_raw_job_runs_by_id_and_its_prompt_stays_out_of_celery(secure_stack: Stack) -> None:
    raw = redis.Redis.from_url(secure_stack.env["IMAGEGEN_REDIS_URL"])
    job = {"request": {"prompt": f"{SECRET_PROMPT} raw"}}
    message = task_message(GENERATE_TASK, "RAW-1", ["RAW-1"], "interactive", kwargs={"job": job})
    raw.lpush("interactive", message)
    with Client(secure_stack.settings()) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                record = client.wait("RAW-1", 1)
                break
            except Exception:
                time.sleep(0.2)
        assert record.status is JobStatus.SUCCEEDED
    log = (secure_stack.processes.log_dir / "worker.log").read_text()
    assert SECRET_PROMPT not in log
    assert base64.b64encode(SECRET_PROMPT.encode()).decode()[:16] not in log


def test_headers_celery_cannot_read_never_reach_it(secure_stack: Stack) -> None:
    """Well-formed generate messages whose headers would stop a worker that read them: the gate
    hands Celery an envelope of its own, so the worker reads none of them and keeps working."""
    raw = redis.Redis.from_url(secure_stack.env["IMAGEGEN_REDIS_URL"])
    for name, value in {
        "expires": [],
        "timelimit": "abc",
        "eta": "not a time",
        "retries": "many",
        "stamped_headers": 7,
    }.items():
        envelope = good_envelope(f"J-header-{name}")
        headers = envelope["headers"]
        assert isinstance(headers, dict)
        headers[name] = value
        raw.lpush("interactive", json.dumps(envelope))
    with Client(secure_stack.settings()) as client:
        started = time.monotonic()
        record = client.wait(client.submit("a lighthouse after bad headers").job_id, 30)
        assert record.status is JobStatus.SUCCEEDED
        assert time.monotonic() - started < 15
    assert raw.llen("interactive") == 0
    assert secure_stack.processes.failed() == []
    log = (secure_stack.processes.log_dir / "worker.log").read_text()
    assert "Unrecoverable error" not in log


def test_a_raw_job_cannot_take_a_tenants_job_id(secure_stack: Stack) -> None:
    """A raw message has no tenant: one whose id is in globex's namespace is quarantined, and
    globex's own job with that id is created as usual."""
    raw = redis.Redis.from_url(secure_stack.env["IMAGEGEN_REDIS_URL"])
    job = {"request": {"prompt": "squatting on globex's id"}}
    squat = task_message(
        GENERATE_TASK, "globex.rawid-1", ["globex.rawid-1"], "interactive", kwargs={"job": job}
    )
    raw.lpush("interactive", squat)
    with Client(secure_stack.settings()) as client:
        deadline = time.monotonic() + 15
        while raw.llen("interactive") and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the gate handles what it popped
        squatted = [e for e in client.quarantine.list(100) if "squatting" in e.message]
        assert [e.reason for e in squatted] == ["bad-arguments"]
        own = client.submit("globex's own picture", tenant="globex", job_id="rawid-1")
        assert (own.job_id, own.tenant) == ("globex.rawid-1", "globex")
        assert client.get("globex.rawid-1").request.prompt == "globex's own picture"  # type: ignore[union-attr]
