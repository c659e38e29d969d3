"""The gate's check of a raw queue message: what passes and why the rest is set aside."""

from __future__ import annotations

import base64
import json

import pytest

from imagegen.envelope import MAX_MESSAGE_BYTES, MalformedMessageError, check_envelope
from imagegen.messages import DELIVER_TASK, GENERATE_TASK, delivery_message_template, task_message


def generate(job_id: str = "J1", **kwargs: object) -> dict[str, object]:
    return json.loads(task_message(GENERATE_TASK, job_id, [job_id], "interactive", kwargs=kwargs))


def reason(raw: str, queue: str = "interactive") -> str:
    with pytest.raises(MalformedMessageError) as caught:
        check_envelope(raw, queue)
    return caught.value.reason


def test_our_own_messages_pass() -> None:
    checked = check_envelope(json.dumps(generate()), "interactive")
    assert (checked.task, checked.task_id, checked.args, checked.kwargs) == (
        GENERATE_TASK,
        "J1",
        ["J1"],
        {},
    )
    raw_job = generate(job={"request": {"prompt": "p"}})
    assert check_envelope(json.dumps(raw_job), "batch").kwargs == {
        "job": {"request": {"prompt": "p"}}
    }
    delivery = delivery_message_template().replace("__DELIVERY_ID__", "J1:job.succeeded")
    assert check_envelope(delivery, "webhooks").task == DELIVER_TASK


@pytest.mark.parametrize(
    "delivery_id",
    [
        "J1:job.budget_exceeded:2",
        "J1:chain.succeeded",
        "acme.J1:tenant.budget_warning:daily",
        "acme.J1:tenant.budget_warning:daily:2026-12-07",
        "acme.J1:tenant.budget_warning:monthly:2026-12",
    ],
)
def test_every_kind_of_delivery_passes_the_gate(delivery_id: str) -> None:
    delivery = delivery_message_template().replace("__DELIVERY_ID__", delivery_id)
    assert check_envelope(delivery, "webhooks").task == DELIVER_TASK


def test_a_celery_retry_with_a_base64_body_passes() -> None:
    envelope = generate()
    envelope["body"] = base64.b64encode(str(envelope["body"]).encode()).decode()
    properties = envelope["properties"]
    assert isinstance(properties, dict)
    properties["body_encoding"] = "base64"
    assert check_envelope(json.dumps(envelope), "interactive").task_id == "J1"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda e: e.update(body="null"), "bad-body"),
        (lambda e: e.update(body='{"a": 1}'), "bad-body"),
        (lambda e: e.update(body='"hello"'), "bad-body"),
        (lambda e: e.update(body="[[1], {}, {}]"), "bad-arguments"),
        (lambda e: e.pop("content-type"), "bad-content-type"),
        (
            lambda e: e.update({"content-type": "application/x-python-serialize"}),
            "bad-content-type",
        ),
        (lambda e: e["headers"].pop("id"), "bad-arguments"),
        (lambda e: e["headers"].update(task="os.system"), "unknown-task"),
        (lambda e: e["headers"].update(id="../../etc"), "bad-arguments"),
        (lambda e: e.update(headers="x"), "bad-envelope"),
        (lambda e: e["properties"].pop("delivery_tag"), "bad-envelope"),
        (lambda e: e["properties"].update(body_encoding="base64"), "bad-body"),
        (lambda e: e["properties"].update(body_encoding="rot13"), "bad-body"),
        (
            lambda e: e.update(body=json.dumps([["J1"], {"job": {}, "extra": 1}, {}])),
            "bad-arguments",
        ),
    ],
)
def test_malformed_envelopes_are_named(change: object, expected: str) -> None:
    envelope = generate()
    change(envelope)  # type: ignore[operator]
    assert reason(json.dumps(envelope)) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", "not-json"),
        ("[1, 2]", "not-an-object"),
        ('"a string"', "not-an-object"),
        ("42", "not-an-object"),
        ("null", "not-an-object"),
        ('{"body": NaN}', "not-json"),
        ("[" * 100_000, "not-json"),
        ("x" * (MAX_MESSAGE_BYTES + 1), "too-large"),
    ],
)
def test_what_is_not_an_envelope_is_named(raw: str, expected: str) -> None:
    assert reason(raw) == expected


def test_a_task_on_the_wrong_queue_is_refused() -> None:
    assert reason(json.dumps(generate()), "webhooks") == "wrong-queue"
    delivery = delivery_message_template().replace("__DELIVERY_ID__", "J1:job.succeeded")
    assert reason(delivery, "interactive") == "wrong-queue"


def test_a_closed_connection_still_knows_where_redis_is() -> None:
    """kombu 5.7's restore of unacknowledged messages on a connection that has closed asked a
    None for its hostname and the worker exited; the gated channel keeps the parameters."""
    from types import SimpleNamespace

    from kombu import Connection

    from worker.transport import GatedChannel

    channel = GatedChannel.__new__(GatedChannel)
    channel.connection = SimpleNamespace(
        client=Connection("redis://127.0.0.1:6390/3"), default_port=6379
    )
    first = channel._connparams()
    assert (first["host"], first["port"], first["db"]) == ("127.0.0.1", 6390, 3)
    channel.connection.client = None  # what close() leaves behind
    assert channel._connparams() == first


def test_a_raw_job_cannot_take_an_id_in_a_tenants_namespace() -> None:
    """A raw job has no tenant: ``globex.rawid-1`` would take globex's own job id."""
    job = {"request": {"prompt": "p"}}
    assert reason(json.dumps(generate("globex.rawid-1", job=job))) == "bad-arguments"
    assert check_envelope(json.dumps(generate("rawid-1", job=job)), "interactive").task_id == (
        "rawid-1"
    )
    # The dispatcher's own messages name jobs by their stored ids, a tenant's included.
    released = check_envelope(json.dumps(generate("globex.rawid-1")), "interactive")
    assert released.task_id == "globex.rawid-1"
