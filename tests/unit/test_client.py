"""The Python client: validation before anything is queued, idempotent ids, Celery messages."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from imagegen.errors import InvalidRequestError, JobConflictError, JobNotFoundError
from imagegen.messages import GENERATE_TASK
from imagegen.records import JobStatus
from imagegen.settings import Settings
from producer.client import Client
from worker.app import make_app


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def client(settings: Settings, redis: Any) -> Client:
    return Client(settings, redis_client=redis)


def queued_messages(redis: Any, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis.lrange(queue, 0, -1)]


def test_submit_records_and_queues_the_job(client: Client, redis: Any) -> None:
    job = client.submit("a lighthouse", aspect_ratio="16:9", metadata={"order": 1})
    assert job.status is JobStatus.QUEUED
    # The same record, and where the job is now (released at once: the quota had room).
    found = client.get(job.job_id)
    assert found.model_copy(update={"place": None}) == job
    assert found.place == "released"
    [message] = queued_messages(redis, "interactive")
    assert message["headers"]["task"] == GENERATE_TASK
    assert message["headers"]["id"] == job.job_id
    args, kwargs, _ = json.loads(message["body"])
    assert (args, kwargs) == ([job.job_id], {})
    # The prompt stays out of the message: Flower shows only the job id.
    assert "lighthouse" not in json.dumps(message)


def test_message_carries_every_header_celery_itself_sends(settings: Settings) -> None:
    """A hand-built protocol-2 message must look like Celery's own to a worker."""
    from imagegen.messages import task_message

    celery_message = make_app(settings).amqp.as_task_v2("id-1", GENERATE_TASK, args=["J"])
    ours = json.loads(task_message(GENERATE_TASK, "id-1", ["J"], "batch"))
    assert set(celery_message.headers) <= set(ours["headers"])
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": "batch"}
    assert ours["content-type"] == "application/json"


def test_batch_priority_goes_to_the_batch_queue(client: Client, redis: Any) -> None:
    client.submit("a", priority="batch")
    assert redis.llen("batch") == 1
    assert redis.llen("interactive") == 0


def test_invalid_jobs_are_never_queued(client: Client, redis: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        client.submit("", aspect_ratio="4:3")
    assert {e.field for e in caught.value.errors} == {"request.prompt", "request.aspect_ratio"}
    assert redis.llen("interactive") == 0
    assert redis.keys("imagegen:*") == []


def test_one_bad_job_in_a_batch_queues_none(client: Client, redis: Any) -> None:
    specs = [{"request": {"prompt": f"p{i}"}} for i in range(5)]
    specs.append({"request": {"prompt": "x", "seed": -1}})
    with pytest.raises(InvalidRequestError):
        client.submit_many(specs)
    assert redis.llen("interactive") == 0


def test_submit_many_returns_records_in_order(client: Client, redis: Any) -> None:
    jobs = client.submit_many({"request": {"prompt": f"p{i}"}} for i in range(50))
    assert [j.request.prompt for j in jobs] == [f"p{i}" for i in range(50)]
    assert len({j.job_id for j in jobs}) == 50
    assert client.reads.open_counts(None) == (50, 0)


def test_resubmitting_a_job_id_returns_the_original_and_queues_nothing(
    client: Client, redis: Any
) -> None:
    first = client.submit("a lighthouse", job_id="order-17")
    again = client.submit("a lighthouse", job_id="order-17")
    assert again.model_copy(update={"place": None}) == first
    assert redis.llen("interactive") == 1


def test_reusing_a_job_id_for_another_request_is_a_conflict(client: Client) -> None:
    client.submit("a lighthouse", job_id="order-17")
    with pytest.raises(JobConflictError):
        client.submit("a windmill", job_id="order-17")
    assert client.get("order-17").request.prompt == "a lighthouse"


def test_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(JobNotFoundError):
        client.get("nope")


def test_model_id_defaults_to_the_setting_and_must_be_allowed(client: Client) -> None:
    assert client.submit("a").model_id == "stability.stable-image-core-v1:0"
    assert client.submit("a", model_id="stability.stable-image-ultra-v1:1").model_id == (
        "stability.stable-image-ultra-v1:1"
    )
    with pytest.raises(InvalidRequestError, match="model_id"):
        client.submit("a", model_id="amazon.titan-image-generator-v2:0")


def test_job_ids_sort_by_submission_time(client: Client) -> None:
    import time

    first = client.submit("a").job_id
    time.sleep(0.002)
    second = client.submit("b").job_id
    assert first < second


def test_a_tenant_default_webhook_applies_unless_the_job_names_one(
    settings: Settings, redis: Any
) -> None:
    client = Client(
        settings.model_copy(update={"webhook_default_url": "https://8.8.8.8/all"}),
        redis_client=redis,
    )
    client.set_tenant_webhook("acme", "https://8.8.4.4/acme")
    assert client.tenant_webhook("acme") == "https://8.8.4.4/acme"
    assert client.submit("a", tenant="acme").webhook_url == "https://8.8.4.4/acme"
    assert client.submit("a", tenant="globex").webhook_url == "https://8.8.8.8/all"
    own = client.submit("a", tenant="acme", webhook_url="https://1.1.1.1/mine")
    assert own.webhook_url == "https://1.1.1.1/mine"
    with pytest.raises(InvalidRequestError, match="webhook_url"):
        client.set_tenant_webhook("acme", "https://169.254.169.254/latest")
    client.set_tenant_webhook("acme", None)
    assert client.tenant_webhook("acme") is None


def test_submit_and_submit_many_take_the_same_shapes(client: Client) -> None:
    shapes: list[Any] = [
        "a prompt",
        {"prompt": "a request"},
        {"request": {"prompt": "a whole job"}, "metadata": {"n": 1}},
        client.spec("a spec"),
    ]
    one_by_one = [client.submit(shape).request for shape in shapes]
    together = [record.request for record in client.submit_many(shapes)]
    assert (
        [r.prompt for r in one_by_one if r]
        == [r.prompt for r in together if r]
        == [
            "a prompt",
            "a request",
            "a whole job",
            "a spec",
        ]
    )
    with pytest.raises(TypeError, match="whole job"):
        client.submit({"request": {"prompt": "x"}}, priority="batch")


def test_a_webhook_url_is_resolved_once_per_submission_not_in_the_contract(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import threading

    lookups: list[str] = []
    real = socket.getaddrinfo
    submitting = threading.get_ident()

    def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == submitting:  # not a background thread of an earlier test
            lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    from imagegen.contract import JobSpec

    JobSpec.parse({"request": {"prompt": "p"}, "webhook_url": "https://hooks.example.com/x"})
    assert lookups == []  # the contract is pure

    url = "https://93.184.215.14/hook"
    client.submit_many([{"request": {"prompt": f"p{i}"}, "webhook_url": url} for i in range(5)])
    assert lookups == ["93.184.215.14"]


def test_every_job_with_a_refused_webhook_is_named(client: Client, redis: Any) -> None:
    jobs = [
        {"request": {"prompt": "fine"}},
        {"request": {"prompt": "bad"}, "webhook_url": "https://127.0.0.1/hook"},
        {"request": {"prompt": "bad too"}, "webhook_url": "https://127.0.0.1/hook"},
    ]
    with pytest.raises(InvalidRequestError) as caught:
        client.submit_many(jobs)
    assert [e.field for e in caught.value.errors] == ["1.webhook_url", "2.webhook_url"]
    assert "loopback" in caught.value.errors[0].message
    assert redis.llen("interactive") == 0


def test_the_per_tenant_cap_holds_under_concurrent_submits(
    settings: Settings, real_redis: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from imagegen.errors import QueueFullError

    capped = settings.model_copy(update={"max_queued_per_tenant": 5})
    client = Client(capped, redis_client=real_redis)

    def submit(index: int) -> bool:
        try:
            client.submit(f"picture {index}", tenant="acme")
        except QueueFullError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=20) as pool:
        accepted = sum(pool.map(submit, range(40)))
    assert accepted == 5
    assert client.reads.open_counts("acme") == (5, 5)
