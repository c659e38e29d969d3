"""Chains and input images on the store: a step waits for the job it takes its image from, goes
on when that job succeeds, and ends without a call when it does not; inputs a tenant may not
read are refused before anything is queued."""

from __future__ import annotations

from typing import Any

import pytest

from imagegen.errors import InvalidRequestError
from imagegen.records import JobStatus
from imagegen.settings import Settings
from imagegen.store.jobs import ClaimState
from producer.client import Client

UPSCALE = "us.stability.stable-fast-upscale-v1:0"
CUTOUT = "us.stability.stable-image-remove-background-v1:0"
LEASE_MS = 60_000


@pytest.fixture
def client(settings: Settings, any_redis: Any) -> Client:
    return Client(settings, redis_client=any_redis)


def three_steps() -> list[dict[str, Any]]:
    return [
        {"request": {"prompt": "a red apple"}},
        {"model_id": CUTOUT, "request": {"image": {"step": 0}}},
        {"model_id": UPSCALE, "request": {"image": {"step": 1}}},
    ]


def finish(client: Client, job_id: str, status: JobStatus, **fields: Any) -> None:
    claim = client.jobs.claim(job_id, "worker-1", LEASE_MS)
    assert claim.state is ClaimState.CLAIMED, claim
    client.jobs.finish(job_id, "worker-1", status, fields)


def test_later_steps_wait_and_go_on_when_their_input_succeeds(client: Client) -> None:
    chain_id, steps = client.submit_chain(three_steps(), tenant="acme")
    first, second, third = (step.job_id for step in steps)
    assert client.get(second).request.image_inputs() == {"image": f"job:{first}"}  # type: ignore[union-attr]
    # Only the first step can be claimed: the others are held, not released.
    assert client.jobs.claim(second, "w", LEASE_MS).state is not ClaimState.CLAIMED
    assert client.chain(chain_id).status == "queued"
    finish(client, first, JobStatus.SUCCEEDED, s3_key="images/a.png", s3_bucket="b", sha256="x")
    client.dispatch.release(CUTOUT)
    assert client.jobs.claim(second, "w", LEASE_MS).state is ClaimState.CLAIMED
    assert client.chain(chain_id).status == "running"
    assert client.get(third).status is JobStatus.QUEUED


def test_a_step_without_an_image_ends_every_later_step_uncalled(client: Client) -> None:
    chain_id, steps = client.submit_chain(three_steps(), tenant="acme")
    first, second, third = (step.job_id for step in steps)
    finish(client, first, JobStatus.FILTERED, finish_reason="Filter reason: prompt")
    for job_id in (second, third):
        record = client.get(job_id)
        assert record.status is JobStatus.CANCELED
        assert record.error_code == "ChainStepSkipped"
        assert record.attempts == 0
    chain = client.chain(chain_id)
    assert chain.status == "failed"
    assert chain.reason is not None
    assert chain.reason.startswith(f"step 0 ({first}) ended filtered")
    assert chain.cost_usd == 0


def test_a_step_may_take_only_an_earlier_steps_output(client: Client) -> None:
    steps = three_steps()
    steps[1]["request"]["image"] = {"step": 2}
    with pytest.raises(InvalidRequestError) as caught:
        client.submit_chain(steps, tenant="acme")
    assert [e.field for e in caught.value.errors] == ["steps[1].request.image"]


def test_another_tenants_job_is_no_input(client: Client) -> None:
    theirs = client.submit("a secret picture", tenant="rival")
    with pytest.raises(InvalidRequestError) as caught:
        client.submit(
            {"model_id": UPSCALE, "request": {"image": {"job": theirs.job_id}}}, tenant="acme"
        )
    [error] = caught.value.errors
    assert error.field == "request.image"
    assert "there is no job" in error.message


def test_a_job_that_takes_a_running_jobs_output_waits_for_it(client: Client) -> None:
    source = client.submit("an apple", tenant="acme")
    edit = client.submit(
        {"model_id": UPSCALE, "request": {"image": {"job": source.job_id}}}, tenant="acme"
    )
    assert edit.after_job_id == source.job_id
    finish(client, source.job_id, JobStatus.FAILED, error_code="ValidationException")
    assert client.get(edit.job_id).status is JobStatus.CANCELED


def test_s3_inputs_outside_the_tenants_uploads_are_refused(client: Client) -> None:
    for uri in (
        "s3://test-bucket/uploads/rival/cat.png",
        "s3://test-bucket/images/2026/01/01/someone.png",
        "s3://other-bucket/cat.png",
    ):
        with pytest.raises(InvalidRequestError) as caught:
            client.submit({"model_id": UPSCALE, "request": {"image": uri}}, tenant="acme")
        [error] = caught.value.errors
        assert error.field == "request.image"
        assert "outside what this tenant may use" in error.message
