"""Writes the service answers for wait for a replica (``IMAGEGEN_REDIS_REPLICA_ACK``): on a
real primary and replica, a replica that stops confirming turns a submit into a retryable
refusal (503 over HTTP), and the retry returns the same job once the replica is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devstack.processes import StackError, redis_server_binary
from devstack.sentinel import SentinelCluster
from imagegen.errors import ReplicaAckTimeoutError
from imagegen.redis.connection import connect
from imagegen.redis.replica_ack import ReplicaAck
from imagegen.settings import Settings
from producer.api import create_app
from producer.client import Client
from tests.conftest import require_service

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
    pair.pause_replica()
    with Client(settings_for(pair, "off")) as client:
        started = time.monotonic()
        client.submit("not waited for", job_id="off")
        assert time.monotonic() - started < ACK_TIMEOUT_S

    pair.pause_replica(paused=False)
    pair.processes.stop("redis-replica-1")  # the replica goes away for good
    primary = pair.client(pair.redis_ports[0])
    deadline = time.monotonic() + 10
    while int(primary.info("replication")["connected_slaves"]) > 0:
        assert time.monotonic() < deadline, "the primary still counts its replica"
        time.sleep(0.05)
    with Client(settings_for(pair, "auto")) as client:
        started = time.monotonic()
        client.submit("a lone primary", job_id="alone")
        assert time.monotonic() - started < ACK_TIMEOUT_S
        assert ReplicaAck.of(client._redis).replicas_needed(client._redis) == 0
    with Client(settings_for(pair, "on")) as client, pytest.raises(ReplicaAckTimeoutError):
        client.submit("on insists", job_id="on")
