"""The HTTP API served by uvicorn, with a real worker behind it."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from imagegen.errors import JobNotFoundError
from producer.client import Client

pytestmark = pytest.mark.integration

JOB = {"request": {"prompt": "a lighthouse", "aspect_ratio": "16:9"}}


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> str:
    return stack.urls.get("api") or stack.start_api()


@pytest.fixture(scope="module")
def headers(stack: Stack) -> dict[str, str]:
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("flow-tests")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=40) as session:
        yield session


def test_submit_and_wait_gives_the_finished_job(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    response = http.post("/v1/jobs", json=JOB, headers={**headers, "Prefer": "wait=20"})
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=20"
    job = response.json()
    assert job["status"] == "succeeded"
    assert (job["width"], job["height"]) == (1344, 768)
    assert job["s3_uri"].startswith("s3://")


def test_a_backend_with_only_a_key_downloads_its_image(
    stack: Stack, http: httpx.Client, headers: dict[str, str]
) -> None:
    response = http.post("/v1/jobs", json=JOB, headers={**headers, "Prefer": "wait=20"})
    job = response.json()
    assert job["status"] == "succeeded", response.text
    # The record's link needs no credentials.
    linked = httpx.get(job["image_url"], timeout=10)
    assert linked.status_code == 200
    assert hashlib.sha256(linked.content).hexdigest() == job["sha256"]
    # /image redirects to a fresh one; following it with the key sends the key to the API only.
    redirect = http.get(f"{job['url']}/image", headers=headers)
    assert redirect.status_code == 302
    assert httpx.get(redirect.headers["location"], timeout=10).content == linked.content
    followed = http.get(f"{job['url']}/image", headers=headers, follow_redirects=True)
    assert followed.status_code == 200
    assert followed.content == linked.content
    # Another tenant's key finds no such job.
    with Client(stack.settings()) as client:
        _, other = client.api_keys.create("flow-tests-other")
    refused = http.get(f"{job['url']}/image", headers={"Authorization": f"Bearer {other}"})
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"


def test_server_sent_events_follow_the_job_to_the_end(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    job = http.post("/v1/jobs", json=JOB, headers=headers).json()
    statuses = []
    with http.stream("GET", f"{job['url']}/events", headers=headers) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                statuses.append(json.loads(line.removeprefix("data: "))["status"])
    assert statuses[-1] == "succeeded"
    assert statuses == sorted(set(statuses), key=statuses.index)  # each status once, in order


def test_a_batch_runs_to_completion(http: httpx.Client, headers: dict[str, str]) -> None:
    jobs = [{"request": {"prompt": f"batch picture {i}"}} for i in range(10)]
    batch = http.post("/v1/batches", json=jobs, headers=headers).json()
    deadline = time.monotonic() + 30
    while True:
        status = http.get(batch["url"], headers=headers).json()
        if status["counts"].get("succeeded") == 10 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["counts"] == {"succeeded": 10}


def test_cancel_of_a_finished_job_is_a_conflict(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    job = http.post("/v1/jobs", json=JOB, headers={**headers, "Prefer": "wait=20"}).json()
    response = http.post(f"{job['url']}/cancel", headers=headers)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert "succeeded" in response.json()["detail"]


def test_a_raw_celery_message_from_another_language_runs_a_job(stack: Stack) -> None:
    """The message of docs/submitting/redis.md, pushed with plain redis-py: no Celery, no client."""
    import redis

    job_id = f"raw-{int(time.time() * 1000)}"
    body = [
        [job_id],
        {
            "job": {
                "request": {"prompt": "a job from elsewhere", "aspect_ratio": "1:1"},
                "metadata": {"from": "go"},
            }
        },
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    message = {
        "body": json.dumps(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "imagegen.generate",
            "id": job_id,
            "root_id": job_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timelimit": [None, None],
            "argsrepr": repr([job_id]),
            "kwargsrepr": "{'job': ...}",
        },
        "properties": {
            "correlation_id": job_id,
            "delivery_mode": 2,
            "priority": 0,
            "delivery_info": {"exchange": "", "routing_key": "interactive"},
            "body_encoding": "utf-8",
            "delivery_tag": f"tag-{job_id}",
        },
    }
    connection = redis.Redis.from_url(stack.env["IMAGEGEN_REDIS_URL"])
    connection.lpush("interactive", json.dumps(message))
    with Client(stack.settings()) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                record = client.wait(job_id, timeout_s=30)
                break
            except JobNotFoundError:  # the record appears once a worker took the message
                time.sleep(0.1)
    assert record.status.value == "succeeded"
    assert record.metadata == {"from": "go"}


def test_a_raw_message_with_a_bad_job_fails_it_naming_the_fields(stack: Stack) -> None:
    import redis

    from imagegen.messages import task_message

    job_id = f"rawbad-{int(time.time() * 1000)}"
    message = task_message(
        "imagegen.generate",
        job_id,
        [job_id],
        "interactive",
        kwargs={"job": {"request": {"prompt": "x", "aspect_ratio": "4:3"}}},
    )
    redis.Redis.from_url(stack.env["IMAGEGEN_REDIS_URL"]).lpush("interactive", message)
    with Client(stack.settings()) as client:
        deadline = time.monotonic() + 20
        record: Any = None
        while record is None and time.monotonic() < deadline:
            record = client.get_many([job_id])[0]
            time.sleep(0.1)
    assert record is not None
    assert (record.status.value, record.error_code) == ("failed", "InvalidRequest")
    assert "request.aspect_ratio" in record.error_message
