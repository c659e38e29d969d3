"""A Redis that comes back with less than it had is noticed from the mark kept in S3: emptied by
a restart without persistence (a real redis-server, restarted), replaced by another epoch, or
behind on submissions; each loss is logged, counted and recorded once, and the doctor says so."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import fakeredis
import pytest
import redis
from moto import mock_aws
from moto.server import ThreadedMotoServer
from prometheus_client import REGISTRY, CollectorRegistry

from imagegen.epoch import EpochWatch, Found, Mark, judge
from imagegen.redis import keys
from imagegen.settings import Settings
from producer.api.metrics import FleetCollector
from producer.client import Client
from producer.doctor_redis import loss_check
from worker.sweeper import OutboxSweeper

BUCKET = "loss-bucket"


@pytest.fixture
def s3() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def loss_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"s3_bucket": BUCKET})


def losses(kind: str) -> float:
    return REGISTRY.get_sample_value("imagegen_worker_redis_losses_total", {"kind": kind}) or 0.0


def fleet_gauge(redis_client: Any, settings: Settings) -> float | None:
    """imagegen_redis_data_lost_timestamp_seconds as the API's /metrics shows it."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(redis_client, settings))
    return registry.get_sample_value("imagegen_redis_data_lost_timestamp_seconds")


def submit(settings: Settings, redis_client: Any, count: int) -> None:
    client = Client(settings, redis_client=redis_client)
    for n in range(count):
        client.submit(f"a lighthouse, take {n}")


@pytest.mark.parametrize(
    ("found", "mark", "kind"),
    [
        (Found(None, 0), None, "fresh"),
        (Found("e1", 5), None, "fresh"),
        (Found("e1", 5), Mark("e1", 5, 0), "ok"),
        (Found("e1", 9), Mark("e1", 5, 0), "ok"),
        (Found(None, 0), Mark("e1", 5, 0), "emptied"),
        (Found(None, 3), Mark("e1", 5, 0), "emptied"),
        (Found("e2", 5), Mark("e1", 5, 0), "replaced"),
        (Found("e1", 4), Mark("e1", 5, 0), "behind"),
        # A mark of the epoch this one replaced (written late) is no new loss.
        (Found("e2", 0, lost_kind="emptied", lost_from="e1"), Mark("e1", 5, 0), "ok"),
    ],
)
def test_judging_redis_against_the_mark(found: Found, mark: Mark | None, kind: str) -> None:
    assert judge(found, mark).kind == kind


def test_a_restart_without_persistence_is_noticed_once_and_the_doctor_says_so(
    start_redis_server: Callable[..., str],
    s3: Any,
    loss_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = start_redis_server("--save", "", "--appendonly", "no")
    client = redis.Redis.from_url(url, decode_responses=True)
    settings = loss_settings.model_copy(update={"redis_url": url})
    sweeper = OutboxSweeper(client, settings, epoch_watch=EpochWatch(client, s3, settings))
    submit(settings, client, 3)
    assert sweeper.watch_epoch().kind == "fresh"  # type: ignore[union-attr]
    first_epoch = client.hget(keys.REDIS_EPOCH_KEY, "epoch")
    assert fleet_gauge(client, settings) == 0
    assert loss_check(EpochWatch(client, s3, settings), settings).status == "ok"

    port = client.connection_pool.connection_kwargs["port"]
    client.shutdown(nosave=True)  # SIGTERM-like stop of a Redis that keeps nothing on disk
    start_redis_server("--save", "", "--appendonly", "no", port=port)
    client = redis.Redis.from_url(url, decode_responses=True)
    assert client.dbsize() == 0
    watch = EpochWatch(client, s3, settings)
    doctor = loss_check(watch, settings)
    assert doctor.status == "warn"
    assert "Redis came back empty" in doctor.detail
    assert "3 submissions are gone" in doctor.detail
    assert "`imagegen recover --apply` re-creates their records and webhooks" in doctor.fix
    before = losses("emptied")
    sweeper = OutboxSweeper(client, settings, epoch_watch=watch)
    with caplog.at_level(logging.ERROR, logger="imagegen.sweeper"):
        verdict = sweeper.watch_epoch()
    assert verdict is not None
    assert verdict.kind == "emptied"
    assert losses("emptied") == before + 1
    assert any("Redis lost data: Redis came back empty" in r.getMessage() for r in caplog.records)
    state = client.hgetall(keys.REDIS_EPOCH_KEY)
    assert state["epoch"] != first_epoch
    assert (state["lost_kind"], state["lost_from"]) == ("emptied", first_epoch)
    assert state["lost_submissions"] == "3"
    # Recorded once: the next check finds the new epoch in the mark.
    watch._next_check = float("-inf")  # the interval has passed
    assert sweeper.watch_epoch().kind == "ok"  # type: ignore[union-attr]
    assert losses("emptied") == before + 1
    assert fleet_gauge(client, settings) == int(state["lost_at_ms"]) / 1000  # the API's too
    after = loss_check(watch, settings)
    assert after.status == "warn"
    assert "Redis lost data 0.0 h ago (emptied; at least 3 accepted submissions gone)" in (
        after.detail
    )


def test_a_redis_behind_the_mark_is_a_loss_of_the_submissions_it_no_longer_counts(
    s3: Any, loss_settings: Settings
) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    watch = EpochWatch(client, s3, loss_settings)
    submit(loss_settings, client, 5)
    watch.check()
    client.set(keys.SUBMISSION_SEQ_KEY, 2)  # a replica that had not received the last three
    verdict = watch.check()
    assert (verdict.kind, verdict.lost_submissions) == ("behind", 3)
    state = client.hgetall(keys.REDIS_EPOCH_KEY)
    assert (state["lost_kind"], state["lost_submissions"]) == ("behind", "3")
    assert watch.check().kind == "ok"  # the mark follows Redis again
    client.set(keys.SUBMISSION_SEQ_KEY, 1)
    assert watch.check().kind == "behind"  # a second loss in the same epoch is a loss too


def test_another_epoch_than_the_marks_is_a_replaced_redis(s3: Any, loss_settings: Settings) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    watch = EpochWatch(client, s3, loss_settings)
    watch.check()
    client.hset(keys.REDIS_EPOCH_KEY, "epoch", "another-deployments")
    verdict = watch.check()
    assert verdict.kind == "replaced"
    assert client.hget(keys.REDIS_EPOCH_KEY, "epoch") not in ("another-deployments", None)
    assert watch.check().kind == "ok"


def test_the_mark_lives_where_the_worker_may_write(s3: Any, loss_settings: Settings) -> None:
    EpochWatch(fakeredis.FakeRedis(decode_responses=True), s3, loss_settings).check()
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert key == "images/_imagegen/redis-epoch.json"  # inside the IAM policy's images/*


def test_an_unreachable_s3_is_logged_and_tried_again(
    loss_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    server.stop()  # nothing listens there now
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    client = fakeredis.FakeRedis(decode_responses=True)
    sweeper = OutboxSweeper(
        client, loss_settings, epoch_watch=EpochWatch(client, s3, loss_settings)
    )
    with caplog.at_level(logging.WARNING, logger="imagegen.sweeper"):
        assert sweeper.watch_epoch() is None
    assert any("cannot be read or written" in r.getMessage() for r in caplog.records)
    asked: list[str] = []
    s3.meta.events.register("before-send.s3", lambda request, **_: asked.append(request.url))
    assert sweeper.watch_epoch() is None  # backing off: S3 is not asked again at once
    assert asked == []
