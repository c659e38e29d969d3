"""After Redis lost data, the images in S3 bring the lost jobs back: ``imagegen recover``
re-creates the final records (and queues the webhooks) they prove, dry run first, once, and
tenant by tenant; a job submitted again adopts its stored image instead of buying it again.
Bedrock is stubbed, S3 is moto, Redis is a real redis-server restarted without its data."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import redis
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto import mock_aws
from prometheus_client import REGISTRY

from imagegen.epoch import EpochWatch
from imagegen.errors import IdempotencyConflictError
from imagegen.ids import new_job_id
from imagegen.image_facts import JobFacts
from imagegen.messages import WEBHOOK_QUEUE
from imagegen.records import JobRecord, JobStatus, ms_to_datetime
from imagegen.redis import keys
from imagegen.settings import Settings, get_settings
from producer.cli import main
from producer.client import Client
from producer.recover import Recovery, Verdict
from tests.support import bedrock_payload
from worker.lost_images import LostImages
from worker.pipeline import Services, run_job
from worker.sweeper import OutboxSweeper

BUCKET = "recover-bucket"
HOOK = "http://127.0.0.1:9/acme-hook"
DEFAULT_HOOK = "http://127.0.0.1:9/default-hook"


@dataclass
class Stack:
    """A worker's services and a client on one Redis, which the test can empty."""

    settings: Settings
    url: str
    s3: Any
    bedrock: Any
    stubber: Stubber
    restart_empty: Callable[[], None]
    redis: Any = None
    client: Client | None = None
    services: Services | None = None

    def connect(self) -> None:
        self.redis = redis.Redis.from_url(self.url, decode_responses=True)
        self.client = Client(self.settings, redis_client=self.redis)
        self.services = Services.on(
            self.redis,
            self.settings,
            bedrock=self.bedrock,
            s3=self.s3,
            lost_images=LostImages(self.redis, self.settings),
        )

    @property
    def jobs(self) -> Client:
        assert self.client is not None
        return self.client

    def run(self, job: JobRecord, answer_seed: int | None = None) -> JobRecord:
        """Run the job's attempt once released; with ``answer_seed`` Bedrock answers once,
        without it a call fails the test (the stub has nothing queued)."""
        assert self.services is not None
        if answer_seed is not None:
            raw = json.dumps(bedrock_payload(seed=answer_seed)).encode()
            self.stubber.add_response(
                "invoke_model",
                {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "x"},
            )
        key = keys.job_key(job.job_id)
        deadline = time.monotonic() + 5
        while self.redis.hget(key, "place") in ("waiting", "delayed"):
            assert time.monotonic() < deadline
            self.services.dispatch.release(job.model_id)
            time.sleep(0.005)
        run_job(job.job_id, self.services, owner="test-owner")
        self.stubber.assert_no_pending_responses()
        return self.jobs.get(job.job_id)

    def lose_everything(self) -> None:
        """Redis restarts without its data; the sweeper notices from the mark in S3."""
        watch = EpochWatch(self.redis, self.s3, self.settings)
        OutboxSweeper(self.redis, self.settings, epoch_watch=watch).watch_epoch()
        self.restart_empty()
        self.connect()
        watch = EpochWatch(self.redis, self.s3, self.settings)
        verdict = OutboxSweeper(self.redis, self.settings, epoch_watch=watch).watch_epoch()
        assert verdict is not None
        assert verdict.kind == "emptied"

    def recovery(self) -> Recovery:
        client = self.jobs
        return Recovery(self.settings, jobs=client.jobs, tenants=client.tenants, s3=self.s3)

    def objects(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=BUCKET, Prefix="images/2")
        return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.fixture
def stack(
    start_redis_server: Callable[..., str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    url = start_redis_server("--save", "", "--appendonly", "no")
    settings = settings.model_copy(
        update={
            "redis_url": url,
            "s3_bucket": BUCKET,
            "webhook_allow_http": True,
            "webhook_allowed_hosts": ("127.0.0.1",),
            "webhook_default_url": DEFAULT_HOOK,
        }
    )

    def restart_empty() -> None:
        client = redis.Redis.from_url(url)
        port = client.connection_pool.connection_kwargs["port"]
        client.shutdown(nosave=True)
        start_redis_server("--save", "", "--appendonly", "no", port=port)

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        bedrock = boto3.client("bedrock-runtime", region_name="us-west-2")
        with Stubber(bedrock) as stubber:
            stack = Stack(settings, url, s3, bedrock, stubber, restart_empty)
            stack.connect()
            yield stack


def test_recover_re_creates_the_lost_jobs_records_and_webhooks_once(stack: Stack) -> None:
    jobs = stack.jobs
    jobs.tenants.set_webhook_url("acme", HOOK)
    acme = stack.run(jobs.submit("a lighthouse", tenant="acme", job_id="order-7"), answer_seed=7)
    plain = stack.run(jobs.submit("a harbour", webhook_url="http://127.0.0.1:9/own"), 8)
    other = stack.run(jobs.submit("a quay", tenant="globex"), answer_seed=9)
    assert acme.job_id == "acme.order-7"
    stack.lose_everything()
    assert not stack.jobs.jobs.exists(acme.job_id)
    # The operator sets the tenant up again (its webhook as before).
    stack.jobs.tenants.set_webhook_url("acme", HOOK)

    recovery = stack.recovery()
    since = recovery.default_since_ms(int(time.time() * 1000))
    found = {f.job_id: f for f in recovery.scan(since)}
    assert {job_id: f.verdict for job_id, f in found.items()} == {
        acme.job_id: Verdict.RECREATE,
        plain.job_id: Verdict.RECREATE,
        other.job_id: Verdict.RECREATE,
    }
    # A dry run changes nothing.
    assert stack.redis.exists(keys.job_key(acme.job_id)) == 0
    # The webhook goes only to a URL the service holds whose digest the image keeps: the
    # tenant's; a job's own URL is never read from S3.
    assert found[acme.job_id].webhook_url == HOOK
    assert found[plain.job_id].webhook_url == ""
    assert "never taken from S3" in found[plain.job_id].webhook_note
    assert [f.job_id for f in recovery.scan(since, tenant="globex")] == [other.job_id]

    assert all(recovery.apply(f) for f in found.values())
    back = stack.jobs.get(acme.job_id)
    assert (back.status, back.tenant, back.seed, back.s3_key) == (
        JobStatus.SUCCEEDED,
        "acme",
        7,
        acme.s3_key,
    )
    assert (back.width, back.height, back.sha256, back.bytes) == (
        acme.width,
        acme.height,
        acme.sha256,
        acme.bytes,
    )
    assert back.created_at == acme.created_at
    assert back.request is None  # the request is not in S3
    # Its tenant's listings have it again.
    assert acme.job_id in [j.job_id for j in stack.jobs.list_jobs(tenant="acme").jobs]
    delivery = stack.redis.hgetall(keys.webhook_key(f"{acme.job_id}:job.succeeded"))
    assert (delivery["url"], delivery["state"]) == (HOOK, "pending")
    # The webhook-id the lost delivery had: a receiver that got it can tell.
    assert delivery["webhook_id"] == f"msg_{acme.job_id}_succeeded"
    assert stack.jobs.get(plain.job_id).webhooks == []

    # Again: nothing more.
    queued = stack.redis.llen(WEBHOOK_QUEUE)
    again = list(recovery.scan(since))
    assert {f.verdict for f in again} == {Verdict.HAS_RECORD}
    assert not any(recovery.apply(f) for f in found.values())
    assert stack.redis.llen(WEBHOOK_QUEUE) == queued


def test_an_image_that_does_not_prove_its_job_is_never_recovered(stack: Stack) -> None:
    job = stack.run(stack.jobs.submit("a lighthouse", tenant="acme"), answer_seed=3)
    assert job.s3_key is not None
    body = stack.s3.get_object(Bucket=BUCKET, Key=job.s3_key)["Body"].read()
    facts = JobFacts.from_metadata(stack.s3.head_object(Bucket=BUCKET, Key=job.s3_key)["Metadata"])
    assert facts is not None
    day = job.s3_key.rsplit("/", 1)[0]
    # Another tenant's job id under a tenant's name, an image without facts, and one whose
    # facts name another job.
    planted = {
        f"{day}/acme.stolen.png": {**facts.metadata(), "job-id": "acme.stolen", "tenant": "evil"},
        f"{day}/OLDJOB.png": {"job-id": "OLDJOB", "sha256": "ab", "width": "1", "height": "1"},
        f"{day}/MISNAMED.png": {**facts.metadata(), "width": "1", "height": "1", "sha256": "a"},
    }
    for key, metadata in planted.items():
        stack.s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=metadata)
    stack.lose_everything()
    recovery = stack.recovery()
    found = {f.key: f for f in recovery.scan(recovery.default_since_ms(int(time.time() * 1000)))}
    assert found[job.s3_key].verdict is Verdict.RECREATE
    for key in planted:
        assert found[key].verdict is Verdict.UNPROVEN, key
        assert not recovery.apply(found[key])
    assert "without that tenant" in found[f"{day}/acme.stolen.png"].reason
    assert "no job facts" in found[f"{day}/OLDJOB.png"].reason
    assert "not the key's" in found[f"{day}/MISNAMED.png"].reason


def test_a_job_submitted_again_after_the_loss_adopts_its_image(stack: Stack) -> None:
    first = stack.run(stack.jobs.submit("a lighthouse", tenant="acme", job_id="o-1"), 11)
    changed = stack.run(stack.jobs.submit("a harbour", tenant="acme", job_id="o-2"), 12)
    minted = stack.run(stack.jobs.submit("a quay", tenant="acme"), answer_seed=13)
    stack.lose_everything()

    # The same tenant's id and request again: no call (none is stubbed), the stored image.
    adopted = REGISTRY.get_sample_value("imagegen_worker_lost_images_adopted_total") or 0.0
    again = stack.run(stack.jobs.submit("a lighthouse", tenant="acme", job_id="o-1"))
    assert (again.status, again.seed, again.s3_key) == (JobStatus.SUCCEEDED, 11, first.s3_key)
    assert REGISTRY.get_sample_value("imagegen_worker_lost_images_adopted_total") == adopted + 1
    # The same id asking for something else is bought anew.
    other = stack.run(stack.jobs.submit("a dune", tenant="acme", job_id="o-2"), answer_seed=21)
    assert (other.seed, other.s3_key) == (21, changed.s3_key)
    assert REGISTRY.get_sample_value("imagegen_worker_lost_images_adopted_total") == adopted + 1
    # A resubmission without the caller's id gets a new id: it has no earlier life to find.
    fresh = stack.run(stack.jobs.submit("a quay", tenant="acme"), answer_seed=22)
    assert fresh.seed == 22
    assert fresh.s3_key != minted.s3_key


def test_after_recover_an_idempotency_key_answers_with_the_recovered_job(stack: Stack) -> None:
    key = "order 12/β"  # any string: kept percent-encoded beside the image
    first = stack.run(stack.jobs.submit("a lighthouse", tenant="acme", idempotency_key=key), 4)
    stack.lose_everything()
    recovery = stack.recovery()
    [found] = recovery.scan(recovery.default_since_ms(int(time.time() * 1000)))
    assert recovery.apply(found)
    # The same submission again: the recovered job, no new one and no call (none is stubbed).
    again = stack.jobs.submit("a lighthouse", tenant="acme", idempotency_key=key)
    assert (again.job_id, again.status, again.s3_key) == (
        first.job_id,
        JobStatus.SUCCEEDED,
        first.s3_key,
    )
    with pytest.raises(IdempotencyConflictError):
        stack.jobs.submit("a harbour", tenant="acme", idempotency_key=key)
    # The key is the tenant's: another tenant's same key is a new job.
    other = stack.jobs.submit("a lighthouse", tenant="globex", idempotency_key=key)
    assert other.job_id != first.job_id


def test_a_lost_jobs_image_is_looked_for_on_the_days_before_the_loss(settings: Settings) -> None:
    lost_at = datetime(2026, 3, 10, 12, tzinfo=UTC)
    settings = settings.model_copy(update={"job_retention_s": 2 * 86400})
    lost = LostImages(redis.Redis(), settings)
    lost._lost_at_ms, lost._read_at = round(lost_at.timestamp() * 1000), time.monotonic()

    def record(job_id: str, created: datetime) -> JobRecord:
        return JobRecord(
            job_id=job_id,
            status=JobStatus.RUNNING,
            model_id="m",
            priority="interactive",
            request=None,
            created_at=created,
        )

    after = lost_at + timedelta(days=1)
    assert lost.candidate_keys(record("acme.o-1", after), "png") == [
        "images/2026/03/10/acme.o-1.png",
        "images/2026/03/09/acme.o-1.png",
        "images/2026/03/08/acme.o-1.png",
    ]
    # An id minted at this submission never looks; nor does any job long after the loss.
    created_ms = round(after.timestamp() * 1000)
    minted = new_job_id(created_ms)
    assert lost.candidate_keys(record(minted, ms_to_datetime(created_ms)), "png") == []
    assert lost.candidate_keys(record("acme.o-1", lost_at + timedelta(days=3)), "png") == []


def test_the_cli_prints_what_it_would_do_then_does_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = stack.run(stack.jobs.submit("a lighthouse", tenant="acme", job_id="cli-1"), 5)
    stack.lose_everything()
    monkeypatch.setenv("IMAGEGEN_REDIS_URL", stack.url)
    monkeypatch.setenv("IMAGEGEN_S3_BUCKET", BUCKET)
    get_settings.cache_clear()
    try:
        assert main(["recover"]) == 0
        dry = capsys.readouterr().out
        assert f"would recreate   {job.job_id}" in dry
        assert "1 records would be re-created, 0 images have their record, 0 unproven" in dry
        assert not stack.jobs.jobs.exists(job.job_id)
        assert main(["recover", "--apply", "--json"]) == 0
        applied = json.loads(capsys.readouterr().out)
        assert applied["totals"]["recreated"] == 1
        assert stack.jobs.get(job.job_id).status is JobStatus.SUCCEEDED
        assert main(["recover", "--apply"]) == 0
        assert "0 records re-created" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
