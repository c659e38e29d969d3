"""Writes the service answers for wait for a replica (``IMAGEGEN_REDIS_REPLICA_ACK``): on a
real primary and replica, a replica that stops confirming turns a submit into a retryable
refusal (503 over HTTP), and the retry returns the same job once the replica is back; a worker
starts no Bedrock call until a replica has its mark (and so the claim and the reservation), and
a bought image whose retry no replica confirms is neither lost nor bought again."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from fastapi.testclient import TestClient
from moto import mock_aws

from devstack.processes import StackError, redis_server_binary
from devstack.sentinel import SentinelCluster
from imagegen.errors import ReplicaAckTimeoutError, StorageError
from imagegen.records import JobStatus
from imagegen.redis.connection import connect
from imagegen.redis.replica_ack import ReplicaAck
from imagegen.settings import Settings
from producer.api import create_app
from producer.client import Client
from tests.conftest import require_service
from tests.support import bedrock_payload
from worker.pipeline import NOT_REPLICATED, RETRY_SCHEDULED, Services, run_job

pytestmark = pytest.mark.integration

ACK_TIMEOUT_S = 0.3


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary and one replica (no Sentinels)."""
    if redis_server_binary() is None:
        require_service("redis-server is needed for the replica tests")
    try:
        running = SentinelCluster(tmp_path, replicas=1, sentinels=0).start()
    except StackError as e:
        pytest.fail(f"the primary and its replica did not start: {e}")
    try:
        # The replica's first sync may still run: the tests start once it confirms a write.
        primary = running.client(running.redis_ports[0])
        primary.set("replica-ready", "1")
        if primary.wait(1, 10_000) < 1:
            pytest.fail("the replica did not confirm a write within 10 s")
        primary.delete("replica-ready")
        yield running
    finally:
        running.pause_replica(paused=False)
        running.stop()


def settings_for(pair: SentinelCluster, mode: str, **more: Any) -> Settings:
    return Settings(
        redis_url=pair.primary_url,
        redis_replica_ack=mode,
        redis_replica_ack_timeout_s=ACK_TIMEOUT_S,
        s3_bucket="test-bucket",
        _env_file=None,  # type: ignore[call-arg]
        **more,
    )


def test_a_replica_that_stops_confirming_turns_a_submit_into_a_retryable_refusal(
    pair: SentinelCluster,
) -> None:
    with Client(settings_for(pair, "auto")) as client:
        client.submit("before the pause", job_id="before")  # auto has seen the replica
        pair.pause_replica()
        started = time.monotonic()
        with pytest.raises(ReplicaAckTimeoutError, match="retry with the same job id"):
            client.submit("during the pause", job_id="during")
        assert time.monotonic() - started >= ACK_TIMEOUT_S

        pair.pause_replica(paused=False)
        again = client.submit("during the pause", job_id="during")  # the caller's retry
        assert again.job_id == "during"
        assert client.get("during").status.value == "queued"
    assert pair.client(pair.redis_ports[1]).exists("imagegen:job:during") == 1


def test_the_api_answers_503_with_retry_after_when_no_replica_confirms(
    pair: SentinelCluster,
) -> None:
    settings = settings_for(pair, "on")
    redis_client = connect(settings)
    redis_client.flushdb()
    with TestClient(create_app(settings, redis_client=redis_client)) as http:
        _, key = Client(settings, redis_client=redis_client).api_keys.create("acme")
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "order-1"}
        job = {"request": {"prompt": "a lighthouse"}}
        pair.pause_replica()
        refused = http.post("/v1/jobs", json=job, headers=headers)
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert "no Redis replica confirmed the write" in refused.json()["detail"]

        pair.pause_replica(paused=False)
        retried = http.post("/v1/jobs", json=job, headers=headers)
        assert retried.status_code in (200, 202), retried.text
        again = http.post("/v1/jobs", json=job, headers=headers)
        assert again.json()["job_id"] == retried.json()["job_id"]  # one job, not two


def test_off_never_waits_and_auto_waits_only_while_a_replica_is_connected(
    pair: SentinelCluster,
) -> None:
    primary = pair.client(pair.redis_ports[0])

    def waits() -> int:
        """WAITs the primary has answered so far."""
        return int(primary.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))

    pair.pause_replica()
    with Client(settings_for(pair, "off")) as client:
        before = waits()
        client.submit("not waited for", job_id="off")
        assert waits() == before

    pair.pause_replica(paused=False)
    pair.processes.stop("redis-replica-1")  # the replica goes away for good
    deadline = time.monotonic() + 10
    while int(primary.info("replication")["connected_slaves"]) > 0:
        assert time.monotonic() < deadline, "the primary still counts its replica"
        time.sleep(0.05)
    with Client(settings_for(pair, "auto")) as client:
        before = waits()
        client.submit("a lone primary", job_id="alone")
        assert waits() == before
        assert ReplicaAck.of(client._redis).replicas_needed(client._redis) == 0
    before = waits()
    with Client(settings_for(pair, "on")) as client, pytest.raises(ReplicaAckTimeoutError):
        client.submit("on insists", job_id="on")
    assert waits() > before  # what the two above would have shown, had they waited


@contextmanager
def worker_services(pair: SentinelCluster) -> Iterator[tuple[Services, Stubber, Client]]:
    """One attempt's services on the real primary (waiting for its replica), Bedrock stubbed
    and S3 by moto, as ``tests/unit/test_pipeline.py`` builds them on fakeredis."""
    settings = settings_for(pair, "on", retry_base_s=0.01, retry_cap_s=0.1, rate_limit_rpm=0)
    redis_client = connect(settings)
    redis_client.flushdb()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        bedrock = boto3.client("bedrock-runtime", region_name="us-west-2")
        with Stubber(bedrock) as stubber:
            services = Services.on(
                redis_client,
                settings,
                bedrock=bedrock,
                s3=s3,
            )
            yield services, stubber, Client(settings, redis_client=redis_client)


def released(services: Services, job_id: str, model_id: str) -> None:
    deadline = time.monotonic() + 5
    while services.reads.get(job_id).place in ("waiting", "delayed"):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"{job_id} was never released"
        services.dispatch.release(model_id)
        time.sleep(0.01)


def answer(stubber: Stubber) -> None:
    raw = json.dumps(bedrock_payload()).encode()
    body = StreamingBody(io.BytesIO(raw), len(raw))
    stubber.add_response("invoke_model", {"body": body, "contentType": "application/json"})


def test_no_bedrock_call_starts_until_a_replica_has_its_claim_and_reservation(
    pair: SentinelCluster,
) -> None:
    """The call mark is the last write before money is spent: while no replica confirms it the
    call does not start and the job comes back without losing an attempt; once the replica is
    back the job is bought once, and the replica has the booking."""
    with worker_services(pair) as (services, stubber, client):
        job = client.submit("a lighthouse", tenant="acme")
        released(services, job.job_id, job.model_id)
        pair.pause_replica()
        outcome = run_job(job.job_id, services, owner="owner-1")
        assert outcome.status == RETRY_SCHEDULED  # and no call: the stubber has no answer
        record = client.get(job.job_id)
        assert (record.status, record.attempts) == (JobStatus.QUEUED, 0)
        assert [e.error_code for e in record.attempt_log] == [NOT_REPLICATED]

        pair.pause_replica(paused=False)
        answer(stubber)
        released(services, job.job_id, job.model_id)
        outcome = run_job(job.job_id, services, owner="owner-2")
        assert outcome.status == "succeeded"
        stubber.assert_no_pending_responses()
        [row] = client.spend("acme")
        assert row.images == 1
    replica = pair.client(pair.redis_ports[1])
    assert replica.hget(f"imagegen:job:{job.job_id}", "status") == "succeeded"


def test_a_bought_image_whose_retry_no_replica_confirms_is_kept_and_booked_once(
    pair: SentinelCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload that fails parks the image and books it with the retry, which waits for the
    replica; when none confirms, the retry stands on the primary and the next attempt uses the
    parked image: one call, one booking."""
    with worker_services(pair) as (services, stubber, client):
        job = client.submit("a lighthouse", tenant="acme")
        released(services, job.job_id, job.model_id)
        answer(stubber)

        def replica_stops_then_upload_fails(*_: Any, **__: Any) -> None:
            pair.pause_replica()
            msg = "S3 is down"
            raise StorageError(msg)

        monkeypatch.setattr("worker.pipeline.upload_image", replica_stops_then_upload_fails)
        started = time.monotonic()
        outcome = run_job(job.job_id, services, owner="owner-1")
        assert outcome.status == RETRY_SCHEDULED
        assert time.monotonic() - started >= ACK_TIMEOUT_S  # it waited for the replica
        monkeypatch.undo()
        pair.pause_replica(paused=False)

        released(services, job.job_id, job.model_id)
        outcome = run_job(job.job_id, services, owner="owner-2")
        assert outcome.status == "succeeded"
        stubber.assert_no_pending_responses()  # one call in all
        [row] = client.spend("acme")
        assert row.images == 1
