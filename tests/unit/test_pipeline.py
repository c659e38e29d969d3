"""One attempt of a job, without Celery: Bedrock stubbed, S3 by moto, the store on fakeredis."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import fakeredis
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws

from imagegen.records import JobRecord, JobStatus
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import CallMark
from imagegen.store.spend import periods
from producer.client import Client
from tests.support import bedrock_payload, image_bytes
from worker import pipeline as pipeline_module
from worker.pipeline import RETRY_SCHEDULED, Services, run_job


@dataclass
class Rig:
    client: Client
    services: Services
    stubber: Stubber
    s3: Any
    redis: Any

    def submit(self, **request: Any) -> JobRecord:
        return self.client.submit({"prompt": "a lighthouse", **request})

    def answer(self, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.stubber.add_response(
            "invoke_model",
            {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"},
        )

    def fail(self, code: str, status: int) -> None:
        self.stubber.add_client_error(
            "invoke_model", service_error_code=code, http_status_code=status, service_message="boom"
        )

    def run(self, job_id: str) -> Any:
        """Run the job's next attempt once the dispatcher released it (a retry after its due
        time), as a worker does on the message of its release."""
        self.release(job_id)
        return run_job(job_id, self.services, owner="test-owner")

    def release(self, job_id: str) -> None:
        key = keys.job_key(job_id)
        deadline = time.monotonic() + 5
        while self.redis.hget(key, "place") in ("waiting", "delayed"):
            assert time.monotonic() < deadline, f"{job_id} was never released"
            self.services.dispatch.release(self.redis.hget(key, "model_id"))
            time.sleep(0.005)

    def objects(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket="test-bucket")
        return [item["Key"] for item in listing.get("Contents", [])]


@pytest.fixture
def rig(settings: Settings) -> Iterator[Rig]:
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        bedrock = boto3.client("bedrock-runtime", region_name="us-west-2")
        with Stubber(bedrock) as stubber:
            services = Services.on(
                redis,
                settings,
                bedrock=bedrock,
                s3=s3,
            )
            yield Rig(Client(settings, redis_client=redis), services, stubber, s3, redis)
            stubber.assert_no_pending_responses()


def test_success_stores_the_image_and_records_where_it_is(rig: Rig) -> None:
    job = rig.submit(aspect_ratio="16:9", output_format="jpeg")
    rig.answer(bedrock_payload("jpeg", seed=4242, size=(96, 54)))
    outcome = rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert outcome.status == "succeeded"
    assert record.status is JobStatus.SUCCEEDED
    assert (record.seed, record.width, record.height) == (4242, 96, 54)
    assert record.s3_key is not None
    assert record.s3_key.endswith(f"{job.job_id}.jpg")
    assert record.s3_uri == f"s3://test-bucket/{record.s3_key}"
    assert record.content_type == "image/jpeg"
    assert record.bedrock_latency_ms is not None
    assert rig.objects() == [record.s3_key]
    head = rig.s3.head_object(Bucket="test-bucket", Key=record.s3_key)
    assert head["ContentType"] == "image/jpeg"
    assert head["Metadata"]["seed"] == "4242"


def test_an_image_is_booked_as_its_tenants_spend_and_the_jobs_cost(rig: Rig) -> None:
    tenant = f"spender-{uuid.uuid4().hex[:8]}"
    job = rig.client.submit("a lighthouse", tenant=tenant)
    rig.answer(bedrock_payload())
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert record.cost_usd == pytest.approx(0.04)
    today = rig.services.ledger.period(tenant, periods()[0])
    assert (today.spent_usd, today.reserved_usd) == (pytest.approx(0.04), 0)


def test_a_withheld_image_counts_as_spend_a_refused_prompt_does_not(rig: Rig) -> None:
    tenant = f"filtered-{uuid.uuid4().hex[:8]}"
    withheld, refused = (rig.client.submit("p", tenant=tenant) for _ in range(2))
    rig.answer({"seeds": [1], "finish_reasons": ["Filter reason: output image"], "images": []})
    rig.run(withheld.job_id)
    rig.answer({"seeds": [2], "finish_reasons": ["Filter reason: prompt"], "images": []})
    rig.run(refused.job_id)
    costs = [rig.client.get(j.job_id).cost_usd for j in (withheld, refused)]
    assert costs == [pytest.approx(0.04), None]
    today = rig.services.ledger.period(tenant, periods()[0])
    assert (today.spent_usd, today.reserved_usd) == (pytest.approx(0.04), 0)


def test_a_filtered_prompt_ends_filtered_without_an_image(rig: Rig) -> None:
    job = rig.submit()
    rig.answer({"seeds": [9], "finish_reasons": ["Filter reason: prompt"], "images": []})
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert record.status is JobStatus.FILTERED
    assert record.finish_reason == "Filter reason: prompt"
    assert record.s3_key is None
    assert rig.objects() == []


def test_a_retryable_error_releases_the_job_and_logs_the_attempt(rig: Rig) -> None:
    job = rig.submit()
    rig.fail("ThrottlingException", 429)
    assert rig.run(job.job_id).status == RETRY_SCHEDULED
    record = rig.client.get(job.job_id)
    assert (record.status, record.place) == (JobStatus.QUEUED, "delayed")
    assert [e.error_code for e in record.attempt_log] == ["ThrottlingException"]
    assert record.next_attempt_at is not None
    retry_in_s = (record.next_attempt_at - record.attempt_log[0].at).total_seconds()
    assert -0.05 <= retry_in_s <= rig.services.settings.retry_cap_s + 0.05
    # The retry runs as attempt 2 and succeeds.
    rig.answer(bedrock_payload())
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert (record.status, record.attempts) == (JobStatus.SUCCEEDED, 2)


def test_a_permanent_error_fails_the_job_with_the_code(rig: Rig) -> None:
    job = rig.submit()
    rig.fail("AccessDeniedException", 403)
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert record.status is JobStatus.FAILED
    assert record.error_code == "AccessDeniedException"
    assert record.error_message == "boom"


def test_running_out_of_attempts_fails_with_the_last_error(rig: Rig) -> None:
    job = rig.submit()
    for attempt in range(1, rig.services.settings.max_attempts + 1):
        rig.fail("ServiceUnavailableException", 503)
        outcome = rig.run(job.job_id)
        if attempt < rig.services.settings.max_attempts:
            assert outcome.status == RETRY_SCHEDULED
    record = rig.client.get(job.job_id)
    assert record.status is JobStatus.FAILED
    assert record.error_code == "ServiceUnavailableException"
    assert len(record.attempt_log) == rig.services.settings.max_attempts


def test_an_image_in_the_wrong_format_is_retried_once_then_fails(rig: Rig) -> None:
    job = rig.submit(output_format="webp")
    rig.answer(bedrock_payload("png"))
    assert rig.run(job.job_id).status == RETRY_SCHEDULED
    rig.answer(bedrock_payload("png"))
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert (record.status, record.error_code) == (JobStatus.FAILED, "InvalidModelOutput")


def test_a_replayed_job_has_its_retries_again(rig: Rig) -> None:
    job = rig.submit(output_format="webp")
    for _ in range(2):
        rig.answer(bedrock_payload("png"))
        rig.run(job.job_id)
    assert rig.client.get(job.job_id).status is JobStatus.FAILED  # "seen twice"
    assert rig.services.store.replay([job.job_id]) == [job.job_id]
    rig.answer(bedrock_payload("png"))
    # The new run's first wrong image is retried, as a new job's would be.
    assert rig.run(job.job_id).status == RETRY_SCHEDULED
    log = rig.client.get(job.job_id).attempt_log
    assert [entry.error_code for entry in log] == [
        "InvalidModelOutput",
        "InvalidModelOutput",
        "Replayed",
        "InvalidModelOutput",
    ]


def test_a_rerun_adopts_the_image_an_earlier_attempt_uploaded(rig: Rig) -> None:
    """A worker died after the upload but before recording: no second Bedrock call."""
    job = rig.submit()
    rig.answer(bedrock_payload(seed=31))
    rig.run(job.job_id)
    key = rig.client.get(job.job_id).s3_key
    # Pretend the record never saw the result: the attempt's worker died, and the redrive put
    # the job back, to be released again.
    rig.redis.hset(
        f"imagegen:job:{job.job_id}",
        mapping={"status": "queued", "lease_until_ms": 0, "s3_key": "", "place": "released"},
    )
    rig.run(job.job_id)  # the stub has no answer queued: calling Bedrock would fail the test
    record = rig.client.get(job.job_id)
    assert (record.status, record.seed, record.s3_key) == (JobStatus.SUCCEEDED, 31, key)
    assert rig.objects() == [key]


def test_an_upload_failure_parks_the_image_and_the_retry_does_not_buy_it_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rig.submit()
    rig.answer(bedrock_payload(seed=55))
    real_put = rig.s3.put_object
    monkeypatch.setattr(rig.s3, "put_object", _raise_s3_error)
    monkeypatch.setattr("worker.storage._UPLOAD_BACKOFF_S", 0.0)
    assert rig.run(job.job_id).status == RETRY_SCHEDULED
    assert rig.client.get(job.job_id).error_code == "StorageError"
    monkeypatch.setattr(rig.s3, "put_object", real_put)
    rig.run(job.job_id)  # no Bedrock answer queued: the parked image is uploaded
    record = rig.client.get(job.job_id)
    assert (record.status, record.seed) == (JobStatus.SUCCEEDED, 55)
    assert rig.services.store.parked_image(job.job_id) is None
    body = rig.s3.get_object(Bucket="test-bucket", Key=record.s3_key)["Body"].read()
    assert body == image_bytes("png")


@pytest.mark.parametrize(
    "step",
    [
        "inspect_image",  # as Bedrock's answer arrives, before the upload
        "upload_image",  # during the upload: the image is stored, then deleted
    ],
)
def test_a_cancel_requested_while_the_job_runs_ends_it_canceled_with_no_image(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    job = rig.submit()
    rig.answer(bedrock_payload())
    real_step = getattr(pipeline_module, step)

    def cancel_arrives_during_the_step(*args: Any, **kwargs: Any) -> Any:
        rig.client.cancel(job.job_id)  # the job is running: the cancel is only requested
        return real_step(*args, **kwargs)

    monkeypatch.setattr(f"worker.pipeline.{step}", cancel_arrives_during_the_step)
    outcome = rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert (outcome.status, record.status, record.s3_key) == ("canceled", JobStatus.CANCELED, None)
    assert record.cost_usd == pytest.approx(0.04)  # the call was paid for
    assert rig.objects() == []


UPSCALE = "us.stability.stable-fast-upscale-v1:0"


def submit_with_an_input(rig: Rig) -> JobRecord:
    """A job whose request names an input image: its attempt fetches it between the claim and
    the call, and marks the call only then."""
    rig.s3.put_object(Bucket="test-bucket", Key="uploads/_/in.png", Body=image_bytes("png"))
    return rig.client.submit(
        {"model_id": UPSCALE, "request": {"image": "s3://test-bucket/uploads/_/in.png"}}
    )


def fetched_input() -> dict[str, str]:
    return {"image": base64.b64encode(image_bytes("png")).decode()}


def test_a_cancel_after_the_claim_stops_before_the_bedrock_call(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = submit_with_an_input(rig)

    def cancel_while_the_input_is_fetched(*_: Any, **__: Any) -> dict[str, str]:
        rig.client.cancel(job.job_id)  # the job is running: the cancel is only requested
        return fetched_input()

    monkeypatch.setattr("worker.pipeline.fetch_inputs", cancel_while_the_input_is_fetched)
    rig.run(job.job_id)  # no Bedrock answer is queued: a call would fail the test
    record = rig.client.get(job.job_id)
    assert (record.status, record.cancel_requested) == (JobStatus.CANCELED, True)


def test_a_first_attempt_with_nothing_to_fetch_has_its_call_marked_by_its_claim(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim marks the call of a job that calls Bedrock straight away: no round trip of its
    own before the call. A job with an input to fetch first is marked only when it calls."""
    marks: list[str] = []
    mark = rig.services.store.mark_calling

    def counted(job_id: str, owner: str, calling: bool) -> Any:
        marks.append(job_id)
        return mark(job_id, owner, calling)

    monkeypatch.setattr(rig.services.store, "mark_calling", counted)
    plain = rig.submit()
    rig.answer(bedrock_payload(seed=5))
    assert rig.run(plain.job_id).status == "succeeded"
    assert marks == []
    assert rig.client.get(plain.job_id).cost_usd == pytest.approx(0.04)

    with_input = submit_with_an_input(rig)
    monkeypatch.setattr("worker.pipeline.fetch_inputs", lambda *_, **__: fetched_input())
    rig.answer(bedrock_payload(seed=6))
    assert rig.run(with_input.job_id).status == "succeeded"
    assert marks == [with_input.job_id]


def forced_redrive(rig: Rig, job_id: str) -> list[str]:
    """The redrive, as when the job's lease has run out (its worker went away)."""
    rig.redis.hset(keys.job_key(job_id), "lease_until_ms", 1)
    rig.redis.zadd(keys.RUNNING_KEY, {job_id: 1})
    return rig.services.store.redrive_due()


def waits_again_uncharged(rig: Rig, job_id: str) -> None:
    """Its lease runs out: it waits again, and nobody is charged for a call never made."""
    assert forced_redrive(rig, job_id) == [job_id]
    record = rig.client.get(job_id)
    assert record.status is JobStatus.QUEUED
    assert not record.cost_usd


def test_an_attempt_that_breaks_before_its_call_gives_the_claims_mark_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = rig.submit()

    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("tracing broke")

    monkeypatch.setattr("worker.pipeline.spans.record_wait", broken)
    with pytest.raises(RuntimeError):
        rig.run(job.job_id)
    waits_again_uncharged(rig, job.job_id)
    today = rig.services.ledger.period(None, periods()[0])
    assert (today.spent_usd, today.reserved_usd) == (0, pytest.approx(0.04))


def test_a_call_mark_no_replica_confirmed_is_given_back_when_the_retry_cannot_be_written(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    job = submit_with_an_input(rig)  # its mark is written before its call, not by its claim
    monkeypatch.setattr("worker.pipeline.fetch_inputs", lambda *_, **__: fetched_input())
    store = rig.services.store
    mark_calling = store.mark_calling

    def unconfirmed(job_id: str, owner: str, calling: bool) -> CallMark:
        written = mark_calling(job_id, owner, calling)
        return CallMark.UNCONFIRMED if calling else written

    def redis_down(*_: Any, **__: Any) -> bool:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(store, "mark_calling", unconfirmed)
    monkeypatch.setattr(store, "release_for_retry", redis_down)
    with pytest.raises(redis.ConnectionError):
        rig.run(job.job_id)
    waits_again_uncharged(rig, job.job_id)
    today = rig.services.ledger.period(None, periods()[0])
    assert today.spent_usd == 0


def test_a_claim_whose_answer_is_lost_gives_its_call_mark_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    job = rig.submit()  # a first attempt: its claim marks the call
    store = rig.services.store
    claim = store.claim

    def answer_lost(*args: Any, **kwargs: Any) -> Any:
        made = claim(*args, **kwargs)
        assert made.call_marked
        raise redis.ConnectionError("connection dropped before the answer came")

    monkeypatch.setattr(store, "claim", answer_lost)
    with pytest.raises(redis.ConnectionError):
        rig.run(job.job_id)
    waits_again_uncharged(rig, job.job_id)


def test_a_job_whose_stored_request_no_longer_reads_fails_and_costs_nothing(rig: Rig) -> None:
    job = rig.submit()
    # A request stored before its model's request type was made stricter.
    rig.redis.hset(keys.job_key(job.job_id), "request", json.dumps({"prompt": ""}))
    outcome = rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert (outcome.status, record.status) == ("failed", JobStatus.FAILED)
    assert record.error_code == "UnreadableRequest"
    assert "request" in (record.error_message or "")
    assert forced_redrive(rig, job.job_id) == []
    assert not rig.client.get(job.job_id).cost_usd
    today = rig.services.ledger.period(None, periods()[0])
    assert (today.spent_usd, today.reserved_usd) == (0, 0)


def test_waiting_for_the_budget_uses_up_none_of_the_jobs_attempts(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its image, bought by an earlier attempt, must be bought again and the budget has no room.
    job = submit_with_an_input(rig)
    monkeypatch.setattr("worker.pipeline.fetch_inputs", lambda *_, **__: fetched_input())
    monkeypatch.setattr(rig.services.store, "mark_calling", lambda *_, **__: CallMark.BUDGET)
    assert rig.run(job.job_id).status == RETRY_SCHEDULED
    record = rig.client.get(job.job_id)
    assert (record.status, record.attempts) == (JobStatus.QUEUED, 0)


def test_a_final_job_is_skipped_without_calling_bedrock(rig: Rig) -> None:
    job = rig.submit()
    rig.answer(bedrock_payload())
    rig.run(job.job_id)
    outcome = rig.run(job.job_id)
    assert outcome.status == "terminal"
    assert rig.client.get(job.job_id).attempts == 1


def test_a_finish_releases_the_next_job_into_the_slot_it_frees(rig: Rig) -> None:
    """The release rides on the finish's round trip: with the model's one slot taken, the next
    job waits; the moment the running one ends it is released, with no other release run, and
    the outcome tells the release loop it need not run one."""
    capped = rig.services.settings.model_copy(update={"max_concurrency": 1})
    services = replace(rig.services, dispatch=Dispatch(rig.redis, capped))
    client = Client(capped, redis_client=rig.redis)
    first = client.submit({"prompt": "a lighthouse"})
    second = client.submit({"prompt": "a harbour"})
    places = [rig.redis.hget(keys.job_key(j.job_id), "place") for j in (first, second)]
    assert places == ["released", "waiting"]
    rig.answer(bedrock_payload())
    outcome = run_job(first.job_id, services, owner="test-owner")
    assert outcome.status == "succeeded"
    assert rig.redis.hget(keys.job_key(second.job_id), "place") == "released"
    assert outcome.release is not None
    assert outcome.release.released == 1


def _raise_s3_error(**_: Any) -> None:
    from botocore.exceptions import EndpointConnectionError

    raise EndpointConnectionError(endpoint_url="http://s3.invalid")


def test_a_failed_job_lands_in_the_dead_letter_set_and_replays(rig: Rig) -> None:
    job = rig.submit()
    rig.fail("AccessDeniedException", 403)
    rig.run(job.job_id)
    assert rig.client.jobs.dead_letter_ids() == [job.job_id]
    assert [r.error_code for r in rig.client.dead_letters()] == ["AccessDeniedException"]

    assert rig.client.replay([job.job_id, "not-failed"]) == [job.job_id]
    assert rig.client.jobs.dead_letter_ids() == []
    replayed = rig.client.get(job.job_id)
    assert (replayed.status, replayed.attempts, replayed.replays) == (JobStatus.QUEUED, 0, 1)
    assert replayed.error_code is None
    assert replayed.queue_position == 1  # waiting for its turn again

    rig.answer(bedrock_payload())
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert (record.status, record.attempts, record.replays) == (JobStatus.SUCCEEDED, 1, 1)
    # The last run's entries stay, then the replay's: the new run began there.
    assert [e.error_code for e in record.attempt_log] == ["AccessDeniedException", "Replayed"]


def test_a_job_the_quota_has_no_room_for_waits_in_redis_not_in_a_worker(
    rig: Rig, settings: Settings
) -> None:
    slow = settings.model_copy(update={"rate_limit_rpm": 6.0, "rate_limit_burst": 1.0})
    client = Client(slow, redis_client=rig.redis)
    first, second, third = (client.submit("a lighthouse") for _ in range(3))
    states = [rig.redis.hget(keys.job_key(j.job_id), "place") for j in (first, second, third)]
    assert states == ["released", "released", "waiting"]  # two tokens, then one each 10 s
    # A stray message for the waiting job runs nothing: no attempt, no Bedrock call.
    outcome = run_job(third.job_id, rig.services, owner="stray")
    assert outcome.status == "waiting"
    record = client.get(third.job_id)
    assert (record.status, record.attempts, record.queue_position) == (JobStatus.QUEUED, 0, 1)
    assert record.estimated_start_at is not None


def test_a_throttle_from_bedrock_slows_the_shared_rate(rig: Rig) -> None:
    job = rig.submit()
    rig.fail("ThrottlingException", 429)
    assert rig.run(job.job_id).status == RETRY_SCHEDULED
    status = rig.services.limiter.status(rig.client.get(job.job_id).model_id)
    assert status.throttles_total == 1
    assert status.effective_rpm < status.configured_rpm


def test_each_answered_call_raises_the_shared_rate_once(rig: Rig) -> None:
    """A success tells the limiter once (with its finish): after a throttle cut the rate, each
    successful job adds back one step of the quota."""
    job = rig.submit()
    rig.fail("ThrottlingException", 429)
    rig.run(job.job_id)
    model_id = rig.client.get(job.job_id).model_id
    cut = rig.services.limiter.status(model_id).effective_rpm
    step = rig.services.settings.rate_limit_rpm * rig.services.settings.rate_increase_fraction
    for expected in (cut + step, cut + 2 * step):
        other = rig.submit(seed=int(expected))
        rig.answer(bedrock_payload())
        assert rig.run(other.job_id).status == "succeeded"
        assert rig.services.limiter.status(model_id).effective_rpm == pytest.approx(expected)


def test_a_read_timeout_is_booked_as_spent_once(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bedrock may have generated (and billed) the image of a call whose answer timed out: it is
    booked when the attempt gives the job back; the retry that buys it again is booked too."""
    from imagegen.errors import BedrockCallError

    tenant = f"timeout-{uuid.uuid4().hex[:8]}"
    job = rig.client.submit("a lighthouse", tenant=tenant)

    def timed_out(*_: Any, **__: Any) -> None:
        msg = "Read timeout on endpoint URL"
        raise BedrockCallError("ReadTimeout", msg)

    with monkeypatch.context() as patch:
        patch.setattr("worker.pipeline.invoke_model", timed_out)
        assert rig.run(job.job_id).status == RETRY_SCHEDULED
    [row] = rig.client.spend(tenant)
    assert (row.images, row.spend_usd) == (1, pytest.approx(0.04))
    rig.answer(bedrock_payload())
    rig.run(job.job_id)
    record = rig.client.get(job.job_id)
    assert (record.status, record.cost_usd) == (JobStatus.SUCCEEDED, pytest.approx(0.08))
    [row] = rig.client.spend(tenant)
    assert (row.images, row.spend_usd) == (2, pytest.approx(0.08))


def test_a_retry_after_the_lease_was_lost_is_not_scheduled(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt whose lease the redrive took back during its call gives nothing back when the
    call fails: the job is someone else's by then (it waits for its turn again)."""
    from imagegen.errors import BedrockCallError

    job = rig.submit()
    store = rig.services.store

    def slow_then_unavailable(*_: Any, **__: Any) -> None:
        rig.redis.hset(keys.job_key(job.job_id), "lease_until_ms", 0)  # the lease ran out
        rig.redis.zadd(keys.RUNNING_KEY, {job.job_id: 0})
        assert store.redrive_due() == [job.job_id]
        msg = "try again"
        raise BedrockCallError("ServiceUnavailableException", msg)

    monkeypatch.setattr("worker.pipeline.invoke_model", slow_then_unavailable)
    outcome = rig.run(job.job_id)
    assert outcome.status == "busy"  # not "retry_scheduled"
    record = rig.client.get(job.job_id)
    assert (record.status, record.place, record.attempt_log) == (JobStatus.QUEUED, "waiting", [])


def test_an_attempt_whose_lease_was_lost_before_its_call_does_not_call(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redrive took the job back before the call started (or a Redis failover lost the
    claim): the call mark says so and nothing is bought; the job waits for its next turn."""
    from imagegen.errors import BedrockCallError

    job = submit_with_an_input(rig)  # the lease runs out while its input is fetched
    store = rig.services.store

    def lease_runs_out(*_: Any, **__: Any) -> dict[str, str]:
        rig.redis.hset(keys.job_key(job.job_id), "lease_until_ms", 0)
        rig.redis.zadd(keys.RUNNING_KEY, {job.job_id: 0})
        assert store.redrive_due() == [job.job_id]
        return fetched_input()

    calls: list[str] = []

    def invoke(*_: Any, **__: Any) -> None:
        calls.append(job.job_id)
        msg = "try again"
        raise BedrockCallError("ServiceUnavailableException", msg)

    monkeypatch.setattr("worker.pipeline.fetch_inputs", lease_runs_out)
    monkeypatch.setattr("worker.pipeline.invoke_model", invoke)
    outcome = rig.run(job.job_id)
    assert (outcome.status, calls) == ("busy", [])
    record = rig.client.get(job.job_id)
    assert (record.status, record.place, record.attempt_log) == (JobStatus.QUEUED, "waiting", [])
    assert record.cost_usd in (None, 0)


def test_bookkeeping_that_fails_after_a_bought_image_never_throws_it_away(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    def outage(*_: Any, **__: Any) -> None:
        msg = "Redis went away"
        raise redis.ConnectionError(msg)

    job = rig.submit()
    rig.answer(bedrock_payload(seed=77))  # one answer only: a second call would fail the stub
    monkeypatch.setattr(rig.services.limiter, "report", outage)
    outcome = rig.run(job.job_id)
    assert outcome.status == "succeeded"
    record = rig.client.get(job.job_id)
    assert record.seed == 77
    assert len(rig.objects()) == 1
    # The final transition booked the image.
    assert record.cost_usd == pytest.approx(0.04)


def test_the_same_fixed_seed_request_is_bought_once(rig: Rig) -> None:
    tenant = f"cached-{uuid.uuid4().hex[:8]}"
    first = rig.client.submit("a lighthouse", seed=42, tenant=tenant)
    rig.answer(bedrock_payload(seed=42))  # one answer: a second call would fail the stub
    rig.run(first.job_id)
    bought = rig.client.get(first.job_id)
    again = rig.client.submit("a lighthouse", seed=42, tenant=tenant)
    assert again.status is JobStatus.SUCCEEDED  # at once, from the cache
    assert (again.cached, again.cache_source_job_id) == (True, first.job_id)
    assert (again.seed, again.s3_key, again.sha256) == (bought.seed, bought.s3_key, bought.sha256)
    assert again.cost_usd is None
    [row] = rig.client.spend(tenant)
    assert (row.images, row.cache_hits, row.saved_usd) == (1, 1, pytest.approx(0.04))
    # Another seed, another tenant or a random seed is a new image.
    for other in (
        rig.client.submit("a lighthouse", seed=43, tenant=tenant),
        rig.client.submit("a lighthouse", seed=42, tenant=f"{tenant}-other"),
        rig.client.submit("a lighthouse", tenant=tenant),
    ):
        assert (other.status, other.cached) == (JobStatus.QUEUED, False)


def test_two_identical_jobs_in_flight_make_one_call(rig: Rig) -> None:
    tenant = f"twins-{uuid.uuid4().hex[:8]}"
    first = rig.client.submit("a windmill", seed=7, tenant=tenant)
    second = rig.client.submit("a windmill", seed=7, tenant=tenant)
    assert rig.redis.hget(f"imagegen:job:{second.job_id}", "place") == "following"
    rig.answer(bedrock_payload(seed=7))
    rig.run(first.job_id)
    served = rig.client.get(second.job_id)
    assert (served.status, served.cached, served.cache_source_job_id) == (
        JobStatus.SUCCEEDED,
        True,
        first.job_id,
    )


def test_when_the_first_job_fails_the_next_identical_one_calls(rig: Rig) -> None:
    tenant = f"relay-{uuid.uuid4().hex[:8]}"
    first = rig.client.submit("a harbour", seed=9, tenant=tenant)
    second = rig.client.submit("a harbour", seed=9, tenant=tenant)
    third = rig.client.submit("a harbour", seed=9, tenant=tenant)
    rig.fail("AccessDeniedException", 403)
    rig.run(first.job_id)
    assert rig.redis.hget(f"imagegen:job:{second.job_id}", "place") in ("waiting", "released")
    rig.answer(bedrock_payload(seed=9))
    rig.run(second.job_id)
    assert rig.client.get(second.job_id).cached is False
    assert rig.client.get(third.job_id).cache_source_job_id == second.job_id


def test_a_purged_cache_buys_again(rig: Rig) -> None:
    tenant = f"purged-{uuid.uuid4().hex[:8]}"
    first = rig.client.submit("a meadow", seed=5, tenant=tenant)
    rig.answer(bedrock_payload(seed=5))
    rig.run(first.job_id)
    assert rig.client.cache.purge(tenant) == 1
    assert rig.client.submit("a meadow", seed=5, tenant=tenant).status is JobStatus.QUEUED


def test_tenants_share_cached_images_only_when_both_opt_in(rig: Rig) -> None:
    a, b, c = (f"{name}-{uuid.uuid4().hex[:6]}" for name in "abc")
    rig.client.cache.set_shared(a, True)
    rig.client.cache.set_shared(b, True)
    first = rig.client.submit("a glacier", seed=11, tenant=a)
    rig.answer(bedrock_payload(seed=11))
    rig.run(first.job_id)
    assert rig.client.submit("a glacier", seed=11, tenant=b).cached is True
    assert rig.client.submit("a glacier", seed=11, tenant=c).cached is False


def test_a_cache_hit_can_copy_the_image_under_its_own_key(rig: Rig, settings: Settings) -> None:
    copying = Client(
        settings.model_copy(update={"cache_copy_objects": True}), redis_client=rig.redis
    )
    tenant = f"copies-{uuid.uuid4().hex[:8]}"
    first = copying.submit("a copied lighthouse", seed=21, tenant=tenant)
    rig.answer(bedrock_payload(seed=21))
    rig.run(first.job_id)
    bought = rig.client.get(first.job_id)
    again = copying.submit("a copied lighthouse", seed=21, tenant=tenant)
    assert again.status is JobStatus.QUEUED  # a worker copies it, in its turn
    rig.run(again.job_id)  # no Bedrock answer is queued: a call would fail the test
    copied = rig.client.get(again.job_id)
    assert (copied.status, copied.cached, copied.cache_source_job_id) == (
        JobStatus.SUCCEEDED,
        True,
        first.job_id,
    )
    assert copied.s3_key != bought.s3_key
    assert copied.s3_key is not None
    assert copied.s3_key.endswith(f"{again.job_id}.png")
    assert (copied.seed, copied.sha256) == (bought.seed, bought.sha256)
    body = rig.s3.get_object(Bucket="test-bucket", Key=copied.s3_key)
    assert body["Metadata"]["job-id"] == again.job_id
    today = rig.services.ledger.period(tenant, periods()[0])
    assert (today.spent_usd, today.reserved_usd) == (pytest.approx(0.04), 0)  # one image paid
