"""Pools seen from a worker's attempt: the released job's pool is the one called (boto3 against
one emulator serving two Regions, each its own pool), a throttle or a denial sends the job to
the other pool without spending an attempt, a 5xx is retried on the other pool, a denial opens
the pool's circuit, and every call is attributed. The store on fakeredis, S3 by moto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import fakeredis
import pytest
from moto import mock_aws

from emulator.behaviour import PoolBehaviour
from imagegen.bedrock import PoolClients, make_bedrock_client, pool_session
from imagegen.pools import Pool, PoolSpec
from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.pool_stats import PoolStats
from producer.client import Client
from worker.pipeline import RETRY_SCHEDULED, Services, run_job

MODEL = "stability.stable-image-core-v1:1"
WEST, EAST = "us-west-2", "us-east-1"


@dataclass
class Rig:
    client: Client
    services: Services
    redis: Any
    emulator: str

    def submit(self) -> str:
        return self.client.submit({"prompt": "a lighthouse"}, model_id=MODEL).job_id

    def run(self, job_id: str) -> Any:
        key = keys.job_key(job_id)
        deadline = time.monotonic() + 5
        while self.redis.hget(key, "place") in ("waiting", "delayed"):
            assert time.monotonic() < deadline, f"{job_id} was never released"
            self.services.dispatch.release(MODEL)
            time.sleep(0.005)
        return run_job(job_id, self.services, owner="test-owner")

    def calls(self, job_id: str) -> list[dict[str, Any]]:
        raw = self.redis.hget(keys.job_key(job_id), "calls") or ""
        return [json.loads(line) for line in raw.splitlines()]

    def pool_of(self, job_id: str) -> str:
        return str(self.redis.hget(keys.job_key(job_id), "pool"))


def pools_settings(settings: Settings, emulator: str) -> Settings:
    """Two pools on one emulator, told apart by their Region; the west one cheaper, so the
    dispatcher tries it first."""
    return settings.model_copy(
        update={
            "pools": (
                PoolSpec(
                    name="west",
                    region=WEST,
                    models=(MODEL,),
                    rpm=600,
                    endpoint_url=emulator,
                    price_usd=0.03,
                ),
                PoolSpec(
                    name="east",
                    region=EAST,
                    models=(MODEL,),
                    rpm=600,
                    endpoint_url=emulator,
                    price_usd=0.05,
                ),
            ),
            "pool_choice": "cheapest",
            "pool_circuit_open_s": 30.0,
        }
    )


@pytest.fixture
def rig(settings: Settings, start_emulator: Any, request: pytest.FixtureRequest) -> Iterator[Rig]:
    west: dict[str, Any] = getattr(request, "param", {})
    emulator = start_emulator(pools={WEST: PoolBehaviour(**west), EAST: PoolBehaviour()})
    settings = pools_settings(settings, emulator)
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        services = Services.on(
            redis,
            settings,
            bedrock=make_bedrock_client(settings, max_pool_connections=2),
            s3=s3,
            pools=PoolClients(settings, max_pool_connections=2),
            pool_stats=PoolStats(redis),
        )
        yield Rig(Client(settings, redis_client=redis), services, redis, emulator)


def emulator_pools(url: str) -> dict[str, dict[str, int]]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_emulator/stats") as answer:
        return dict(json.load(answer)["pools"])


def test_the_job_is_called_in_the_pool_it_was_released_to(rig: Rig) -> None:
    job_id = rig.submit()
    assert rig.run(job_id).status == "succeeded"
    assert rig.pool_of(job_id) == "west"
    assert emulator_pools(rig.emulator) == {WEST: {"ok": 1}}
    [call] = rig.calls(job_id)
    assert (call["pool"], call["region"], call["outcome"]) == ("west", WEST, "image")
    assert call["request_id"]  # x-amzn-RequestId
    assert isinstance(call["invocation_latency_ms"], int)  # x-amzn-bedrock-invocation-latency
    [day] = PoolStats(rig.redis).days(["west"], [time.strftime("%Y-%m-%d", time.gmtime())])
    assert (day.calls, day.images, day.spent_usd) == (1, 1, pytest.approx(0.03))


@pytest.mark.parametrize("rig", [{"fault_rates": {"throttled": 1.0}}], indirect=True)
def test_a_throttled_pool_hands_the_job_to_another_without_spending_an_attempt(rig: Rig) -> None:
    job_id = rig.submit()
    assert rig.run(job_id).status == RETRY_SCHEDULED
    west = rig.services.limiter.quota.pool_statuses(MODEL)[0]
    assert west.quota.throttles_total == 1
    assert west.quota.effective_rpm < 600  # the west pool's own rate came down
    assert rig.run(job_id).status == "succeeded"
    record = rig.client.get(job_id)
    assert record.attempts == 1  # the throttle spent none of the job's attempts
    assert [(c["pool"], c["outcome"]) for c in rig.calls(job_id)] == [
        ("west", "ThrottlingException"),
        ("east", "image"),
    ]


@pytest.mark.parametrize("rig", [{"fault_rates": {"unavailable": 1.0}}], indirect=True)
def test_a_5xx_is_retried_on_another_pool_with_backoff(rig: Rig) -> None:
    job_id = rig.submit()
    assert rig.run(job_id).status == RETRY_SCHEDULED
    assert rig.run(job_id).status == "succeeded"
    record = rig.client.get(job_id)
    assert record.attempts == 2  # a 5xx is an attempt, as always
    assert [entry.error_code for entry in record.attempt_log] == ["ServiceUnavailableException"]
    assert [c["pool"] for c in rig.calls(job_id)] == ["west", "east"]


@pytest.mark.parametrize("rig", [{"denied_models": (MODEL,)}], indirect=True)
def test_access_denied_opens_the_pools_circuit_and_the_job_goes_elsewhere(rig: Rig) -> None:
    first = rig.submit()
    assert rig.run(first).status == RETRY_SCHEDULED
    west = rig.services.limiter.quota.pool_statuses(MODEL)[0]
    assert (west.circuit, west.circuit_reason) == ("open", "AccessDeniedException")
    assert rig.run(first).status == "succeeded"
    assert rig.client.get(first).attempts == 1
    # While the circuit is open the cheaper pool gets nothing.
    later = [rig.submit() for _ in range(3)]
    assert [rig.run(job_id).status for job_id in later] == ["succeeded"] * 3
    assert {rig.pool_of(job_id) for job_id in later} == {"east"}
    assert emulator_pools(rig.emulator)[WEST] == {"AccessDeniedException": 1}


@pytest.mark.parametrize("rig", [{"unsubscribed_models": (MODEL,)}], indirect=True)
def test_no_subscription_opens_the_circuit_too(rig: Rig) -> None:
    job_id = rig.submit()
    assert rig.run(job_id).status == RETRY_SCHEDULED
    assert rig.services.limiter.quota.pool_statuses(MODEL)[0].circuit == "open"
    assert rig.run(job_id).status == "succeeded"


def test_a_denial_with_no_other_pool_fails_the_job_as_before(
    settings: Settings, start_emulator: Any
) -> None:
    emulator = start_emulator(denied_models=(MODEL,))
    alone = settings.model_copy(
        update={
            "pools": (
                PoolSpec(name="only", region=WEST, models=(MODEL,), rpm=600, endpoint_url=emulator),
            )
        }
    )
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        services = Services.on(
            redis,
            alone,
            bedrock=make_bedrock_client(alone, max_pool_connections=2),
            s3=s3,
        )
        rig = Rig(Client(alone, redis_client=redis), services, redis, emulator)
        job_id = rig.submit()
        assert rig.run(job_id).status == JobStatus.FAILED.value
        assert rig.client.get(job_id).error_code == "AccessDeniedException"


def test_a_role_pool_calls_with_the_assumed_roles_session(settings: Settings) -> None:
    pool = Pool(
        name="acct-b",
        region=EAST,
        rpm=600,
        burst=1,
        role_arn="arn:aws:iam::222222222222:role/imagegen-bedrock",
    )
    with mock_aws():  # STS AssumeRole answered by moto
        credentials = pool_session(settings, pool).get_credentials()
        assert credentials is not None
        frozen = credentials.get_frozen_credentials()
        assert frozen.access_key.startswith("ASIA")  # a temporary session, not the caller's keys
        assert frozen.token
        assert credentials.method == "sts-assume-role"


@pytest.mark.parametrize("rig", [{"denied_models": (MODEL,)}], indirect=True)
def test_doctor_checks_every_pool_and_shows_an_open_circuit(rig: Rig) -> None:
    from producer.doctor import Doctor

    settings = rig.services.settings
    doctor = Doctor(settings, redis_client=rig.redis)
    before = {c.name: c for c in doctor.pools([MODEL])}
    west, east = f"pool west ({WEST}) {MODEL}", f"pool east ({EAST}) {MODEL}"
    assert before[west].status == "fail"
    assert "access denied" in before[west].detail
    assert before[east].status == "ok"
    assert before[f"pool west circuit {MODEL}"].status == "ok"
    job_id = rig.submit()
    rig.run(job_id)  # the west pool denies the call: its circuit opens
    after = {c.name: c for c in doctor.pools([MODEL])}
    circuit = after[f"pool west circuit {MODEL}"]
    assert circuit.status == "warn"
    assert "open after AccessDeniedException" in circuit.detail
    assert after[f"pool east circuit {MODEL}"].status == "ok"
