"""The plain intake: JSON jobs pushed onto a Redis list by backends that speak only Redis, on
fakeredis (with Lua) and on a real Redis."""

from __future__ import annotations

import json
from typing import Any

from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import JobStore
from imagegen.store.quarantine import Quarantine
from worker.intake import Intake


def intake(redis: Any, settings: Settings) -> Intake:
    return Intake(JobStore(redis, 3600), Dispatch(redis, settings), settings)


def push(redis: Any, *messages: Any) -> None:
    for message in messages:
        redis.lpush(keys.INTAKE_KEY, message if isinstance(message, str) else json.dumps(message))


def test_a_pushed_job_waits_and_is_released_like_any_other(
    any_redis: Any, settings: Settings
) -> None:
    push(
        any_redis,
        {"job_id": "order-1", "tenant": "acme", "request": {"prompt": "a red fox"}},
        {"job_id": "order-2", "request": {"prompt": "a grey fox"}, "priority": "batch"},
    )
    assert intake(any_redis, settings).read_list() == 2
    assert any_redis.llen(keys.INTAKE_KEY) == 0
    reads = JobReads(any_redis)
    first, second = reads.get("acme.order-1"), reads.get("order-2")
    assert (first.tenant, first.request.prompt) == ("acme", "a red fox")
    assert (second.tenant, second.priority) == (None, "batch")
    assert any_redis.hget(keys.job_key("acme.order-1"), "dispatch") in ("waiting", "released")
    Dispatch(any_redis, settings).release(first.model_id)
    assert any_redis.hget(keys.job_key("acme.order-1"), "dispatch") == "released"


def test_reading_a_message_twice_makes_one_job(any_redis: Any, settings: Settings) -> None:
    message = {"job_id": "twice", "request": {"prompt": "p"}}
    push(any_redis, message)
    reader = intake(any_redis, settings)
    assert reader.read_list() == 1
    push(any_redis, message)  # as if a reader died before removing it
    assert reader.read_list() == 1
    assert JobReads(any_redis).open_counts(None) == (1, 0)


def test_a_job_that_breaks_the_rules_fails_naming_the_field(
    any_redis: Any, settings: Settings
) -> None:
    push(any_redis, {"job_id": "bad", "request": {"prompt": "p", "aspect_ratio": "4:3"}})
    intake(any_redis, settings).read_list()
    record = JobReads(any_redis).get("bad")
    assert (record.status, record.error_code) == (JobStatus.FAILED, "InvalidRequest")
    assert "request.aspect_ratio" in (record.error_message or "")


def test_messages_without_a_usable_job_id_go_to_the_quarantine(
    any_redis: Any, settings: Settings
) -> None:
    push(
        any_redis,
        "not json",
        {"request": {"prompt": "no id"}},
        {"job_id": "has spaces", "request": {"prompt": "p"}},
        ["a", "list"],
    )
    assert intake(any_redis, settings).read_list() == 4
    reasons = sorted(entry.reason for entry in Quarantine(any_redis).list())
    assert reasons == ["no-job-id", "no-job-id", "not-a-job", "not-json"]
    assert JobReads(any_redis).open_counts(None) == (0, 0)


def test_one_reader_at_a_time(any_redis: Any, settings: Settings) -> None:
    push(any_redis, {"job_id": "locked", "request": {"prompt": "p"}})
    any_redis.set(keys.INTAKE_LOCK_KEY, "another process", ex=30)
    assert intake(any_redis, settings).read_list() == 0
    assert any_redis.llen(keys.INTAKE_KEY) == 1
