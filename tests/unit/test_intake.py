"""The plain intake: JSON jobs pushed onto a Redis list by backends that speak only Redis, on
fakeredis (with Lua) and on a real Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.settings import ModelLimit, Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import ClaimState, JobStore
from imagegen.store.quarantine import Quarantine
from imagegen.store.tenants import Tenants
from worker import intake as intake_module
from worker.intake import Intake

UPSCALE = "us.stability.stable-fast-upscale-v1:0"
ULTRA = "stability.stable-image-ultra-v1:0"


def intake(redis: Any, settings: Settings, **options: Any) -> Intake:
    return Intake(JobStore(redis, 3600), Dispatch(redis, settings), settings, **options)


def push(redis: Any, *messages: Any) -> None:
    for message in messages:
        redis.lpush(
            keys.INTAKE_KEY, message if isinstance(message, str | bytes) else json.dumps(message)
        )


def job(job_id: str, tenant: Any = None, **fields: Any) -> dict[str, Any]:
    message = {"job_id": job_id, "request": {"prompt": f"picture {job_id}"}, **fields}
    return message if tenant is None else {**message, "tenant": tenant}


def refusal(redis: Any, job_id: str) -> tuple[JobStatus, str | None, str]:
    record = JobReads(redis).get(job_id)
    return record.status, record.error_code, record.error_message or ""


def quarantined(redis: Any) -> list[str]:
    return sorted(entry.reason for entry in Quarantine(redis).list())


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
    assert any_redis.hget(keys.job_key("acme.order-1"), "place") in ("waiting", "released")
    Dispatch(any_redis, settings).release(first.model_id)
    assert any_redis.hget(keys.job_key("acme.order-1"), "place") == "released"


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
    status, code, message = refusal(any_redis, "bad")
    assert (status, code) == (JobStatus.FAILED, "InvalidRequest")
    assert "request.aspect_ratio" in message


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
    assert quarantined(any_redis) == ["no-job-id", "no-job-id", "not-a-job", "not-json"]
    assert JobReads(any_redis).open_counts(None) == (0, 0)


# -- readers that die or stall -------------------------------------------------------------


def test_a_reader_that_stalls_past_its_lease_loses_no_message(
    any_redis: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one reader stalls on its first message (past its lease), another reads the same
    messages and more arrive; every one of them ends up a job, none is lost."""
    push(any_redis, *(job(f"first-{n}") for n in range(3)))
    stalled = intake(any_redis, settings, lease_s=0.3)
    other = intake(any_redis, settings, lease_s=0.3)
    real_accept = Intake.accept
    stalls = []

    def stall_once(self: Intake, *args: Any, **kwargs: Any) -> bool:
        if self is stalled and not stalls:
            stalls.append(1)
            time.sleep(0.5)  # the lease lapses
            other.read_list()  # reads what the stalled reader holds
            push(any_redis, *(job(f"later-{n}") for n in range(2)))
        return real_accept(self, *args, **kwargs)

    monkeypatch.setattr(Intake, "accept", stall_once)
    stalled.read_list()
    while other.read_list() or stalled.read_list():
        pass
    wanted = [f"first-{n}" for n in range(3)] + [f"later-{n}" for n in range(2)]
    assert [record is not None for record in JobReads(any_redis).get_many(wanted)] == [True] * 5
    assert any_redis.llen(keys.INTAKE_KEY) == 0


def test_the_messages_of_a_reader_that_died_are_read_next(
    any_redis: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    push(any_redis, job("oldest"), job("older"))
    monkeypatch.setattr(intake_module, "INTAKE_READ_MOST", 2)

    def die(self: Intake, *args: Any, **kwargs: Any) -> bool:
        raise SystemExit  # the process dies holding both messages

    with monkeypatch.context() as patch:
        patch.setattr(Intake, "accept", die)
        with pytest.raises(SystemExit):
            intake(any_redis, settings, lease_s=0.2).read_list()
    push(any_redis, job("newer"), job("newest"))
    time.sleep(0.3)  # its lease lapses
    reader = intake(any_redis, settings, lease_s=0.2)
    reads = JobReads(any_redis)
    assert reader.read_list() == 2
    found = reads.get_many(["oldest", "older", "newer", "newest"])
    assert [record is not None for record in found] == [True, True, False, False]
    assert reader.read_list() == 2
    assert reads.open_counts(None) == (4, 0)
    assert any_redis.zcard(keys.INTAKE_READERS_KEY) == 0
    assert not any_redis.keys(keys.intake_reader_key("*"))


# -- poison messages ----------------------------------------------------------------------


def test_a_poison_message_is_set_aside_and_the_intake_goes_on(
    any_redis: Any, settings: Settings
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = json.dumps(job("huge", metadata={"pad": "x" * 300_000}))
    push(any_redis, deep, huge, b"\xff\xfe not UTF-8", job("after-the-poison"))
    reader = intake(any_redis, settings)
    for _ in range(3):  # the same on every pass: nothing is left behind to fail again
        reader.read_list()
    assert JobReads(any_redis).get("after-the-poison").status is JobStatus.QUEUED
    assert any_redis.llen(keys.INTAKE_KEY) == 0
    assert quarantined(any_redis) == ["not-json", "too-large", "unreadable"]


def test_any_error_on_one_message_sets_only_that_message_aside(
    any_redis: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_accept = Intake.accept

    def broken_for_one(self: Intake, job_id: str, *args: Any, **kwargs: Any) -> bool:
        if job_id == "cursed":
            raise RuntimeError(job_id)
        return real_accept(self, job_id, *args, **kwargs)

    monkeypatch.setattr(Intake, "accept", broken_for_one)
    push(any_redis, job("before"), job("cursed"), job("after"))
    assert intake(any_redis, settings).read_list() == 3
    assert [r is not None for r in JobReads(any_redis).get_many(["before", "after"])] == [True] * 2
    [entry] = Quarantine(any_redis).list()
    assert (entry.reason, entry.queue) == ("unreadable", "intake")
    assert "cursed" in entry.message
    assert "RuntimeError" in entry.detail


# -- the same checks as every other way in -------------------------------------------------


def test_input_images_the_tenant_may_not_read_are_refused(
    any_redis: Any, settings: Settings
) -> None:
    store = JobStore(any_redis, 3600)
    push(any_redis, job("theirs", "rival"))
    intake(any_redis, settings).read_list()
    assert store.claim("rival.theirs", "w", 60_000).state is ClaimState.CLAIMED
    image = {"s3_bucket": "test-bucket", "s3_key": "images/theirs.png", "sha256": "x"}
    store.finish("rival.theirs", "w", JobStatus.SUCCEEDED, image)
    inputs = {
        "other-bucket": "s3://other-bucket/secret.png",
        "their-upload": "s3://test-bucket/uploads/rival/cat.png",
        "our-outputs": "s3://test-bucket/images/2026/01/01/someone.png",
        "their-job": {"job": "rival.theirs"},
        "their-job-id": {"job": "theirs"},
    }
    push(
        any_redis,
        *(job(name, "acme", model_id=UPSCALE, request={"image": i}) for name, i in inputs.items()),
    )
    intake(any_redis, settings).read_list()
    for name in inputs:
        status, code, message = refusal(any_redis, f"acme.{name}")
        assert (status, code) == (JobStatus.FAILED, "InvalidRequest"), name
        assert message.startswith("request.image"), name
    assert JobReads(any_redis).open_counts("acme") == (0, 0)


def test_a_full_queue_refuses_the_job_naming_the_cap(any_redis: Any, settings: Settings) -> None:
    settings = settings.model_copy(update={"max_queued_per_tenant": 2})
    push(any_redis, *(job(f"j{n}", "acme") for n in range(3)), job("other", "globex"))
    intake(any_redis, settings).read_list()
    reads = JobReads(any_redis)
    assert reads.open_counts("acme") == (3, 2)
    status, code, message = refusal(any_redis, "acme.j2")
    assert (status, code) == (JobStatus.FAILED, "QueueFull")
    assert message.startswith("IMAGEGEN_MAX_QUEUED_PER_TENANT: tenant acme has 2 jobs")
    assert reads.get("globex.other").status is JobStatus.QUEUED


def test_a_deadline_the_queue_cannot_meet_is_refused(any_redis: Any, settings: Settings) -> None:
    # Ultra at one job per 10 s: four jobs ahead put a fifth's start past 5 s from now.
    settings = settings.model_copy(update={"model_limits": {ULTRA: ModelLimit(rpm=6, burst=1)}})
    push(any_redis, *(job(f"j{n}", "acme", model_id=ULTRA) for n in range(4)))
    soon = (datetime.now(UTC) + timedelta(seconds=5)).isoformat()
    later = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    push(
        any_redis,
        job("hurried", "globex", model_id=ULTRA, expires_at=soon),
        job("patient", "globex", model_id=ULTRA, expires_at=later),
    )
    intake(any_redis, settings).read_list()
    status, code, message = refusal(any_redis, "globex.hurried")
    assert (status, code) == (JobStatus.FAILED, "InvalidRequest")
    assert message.startswith("expires_at: cannot be met")
    assert JobReads(any_redis).get("globex.patient").status is JobStatus.QUEUED


def test_a_job_without_a_webhook_gets_its_tenants_default(
    any_redis: Any, settings: Settings
) -> None:
    Tenants(any_redis).set_webhook_url("acme", "https://93.184.215.14/acme-hook")
    push(
        any_redis, job("hooked", "acme"), job("own", "acme", webhook_url="https://93.184.215.14/x")
    )
    intake(any_redis, settings).read_list()
    reads = JobReads(any_redis)
    assert reads.get("acme.hooked").webhook_url == "https://93.184.215.14/acme-hook"
    assert reads.get("acme.own").webhook_url == "https://93.184.215.14/x"


def test_a_message_with_an_invalid_tenant_leaves_no_record(
    any_redis: Any, settings: Settings
) -> None:
    push(
        any_redis,
        job("j1", "Bad Tenant!"),
        job("j2", "../acme"),
        job("j3", ""),
        job("j4", 42),
    )
    assert intake(any_redis, settings).read_list() == 4
    assert quarantined(any_redis) == ["bad-tenant"] * 4
    assert not any_redis.keys(keys.job_key("*"))
