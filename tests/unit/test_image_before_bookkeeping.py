"""A bought image goes to S3 before anything Redis could hold up: with Redis stalled (CLIENT
PAUSE on a real server) from before Bedrock's answer, the image is uploaded while Redis still
answers nothing, and the job finishes once it answers again. The worker's real services, the
emulator and moto's S3 server, all over real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import redis
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY

from imagegen.records import JobStatus
from imagegen.settings import Settings
from producer.client import Client
from worker.pipeline import JobOutcome, run_job
from worker.runtime import build_services

BUCKET = "stall-bucket"
CALL_S = 1.5  # the emulator's answer comes this long after the call: inside the stall
STALL_S = 8.0  # longer than the whole wait the upload may take
UPLOAD_WITHIN_S = CALL_S + 2.5
KEPT_WITHIN_S = 1.5  # Bedrock's answer to the upload: inspecting the image, the PutObject


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def s3_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-west-2").create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    yield url
    server.stop()


def kept_window() -> tuple[float, float]:
    """Observations and total seconds of imagegen_worker_bought_to_kept_seconds so far."""
    count = REGISTRY.get_sample_value("imagegen_worker_bought_to_kept_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("imagegen_worker_bought_to_kept_seconds_sum") or 0.0
    return count, total


def test_a_stalled_redis_does_not_delay_the_upload_of_a_bought_image(
    start_redis_server: Callable[..., str], start_emulator: Any, s3_url: str
) -> None:
    redis_url = start_redis_server("--save", "", "--appendonly", "no")
    settings = Settings(
        redis_url=redis_url,
        bedrock_endpoint_url=start_emulator(latency_ms=CALL_S * 1000),
        s3_endpoint_url=s3_url,
        s3_bucket=BUCKET,
        rate_limit_rpm=60_000,  # the limiter is on: its report is one of the Redis writes
        webhook_send_threads=0,
        worker_concurrency=2,
        _env_file=None,  # type: ignore[call-arg]
    )
    services = build_services(settings)
    client = Client(settings)
    job = client.submit("a lighthouse in a storm")
    while client.get(job.job_id).place in ("waiting", "delayed"):
        services.dispatch.release(job.model_id)
    sent = threading.Event()
    services.bedrock.meta.events.register(
        "before-send.bedrock-runtime.InvokeModel", lambda **_: sent.set()
    )
    before = kept_window()
    outcome: list[JobOutcome] = []
    worker = threading.Thread(target=lambda: outcome.append(run_job(job.job_id, services, "w1")))
    worker.start()
    assert sent.wait(10), "the job never called Bedrock"
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("CLIENT", "PAUSE", round(STALL_S * 1000), "ALL")
    stalled_at = time.monotonic()
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-west-2")
    uploaded_after_s = None
    while time.monotonic() - stalled_at < STALL_S:
        if s3.list_objects_v2(Bucket=BUCKET, Prefix="images/").get("KeyCount"):
            uploaded_after_s = time.monotonic() - stalled_at
            break
        time.sleep(0.02)
    assert uploaded_after_s is not None, "nothing was uploaded while Redis was stalled"
    assert uploaded_after_s < UPLOAD_WITHIN_S, uploaded_after_s
    worker.join(30)
    assert [o.status for o in outcome] == ["succeeded"]  # finished once Redis answered
    record = client.get(job.job_id)
    assert record.status is JobStatus.SUCCEEDED
    assert s3.head_object(Bucket=BUCKET, Key=record.s3_key or "")["ContentLength"] > 0
    count, total = kept_window()
    assert count == before[0] + 1
    # The window runs from Bedrock's answer to the upload: no stalled write inside it.
    assert total - before[1] < KEPT_WITHIN_S, total - before[1]
