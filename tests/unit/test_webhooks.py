"""Webhook deliveries against a real HTTP receiver on 127.0.0.1, without Celery (fakeredis)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from imagegen.messages import WEBHOOK_QUEUE
from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.s3 import make_s3_client
from imagegen.settings import Settings
from imagegen.store.deliveries import Deliveries, DeliveryClaim
from imagegen.store.jobs import JobStore
from imagegen.store.maintenance import Maintenance
from imagegen.store.signing import SigningSecrets
from imagegen.store.spend import Budget
from producer.client import Client
from producer.webhooks import WebhookVerificationError, verify
from tests.support import Receiver, ScriptClock, TrickleServer, independent_signature_check
from worker.send_now import SendNow
from worker.sweeper import OutboxSweeper
from worker.webhooks import WebhookSender

SCHEDULE = (0.0, 0.5, 0.5, 0.5)


@dataclass
class Hooks:
    client: Client
    store: JobStore
    sender: WebhookSender
    receiver: Receiver
    redis: Any
    settings: Settings

    def job(self, path: str, *, status: JobStatus = JobStatus.SUCCEEDED, **options: Any) -> str:
        """A job with a webhook to ``path``, taken to ``status``; returns the delivery id."""
        record = self.client.submit(
            "a lighthouse", webhook_url=self.receiver.url(path), metadata={"order": 42}, **options
        )
        self.store.claim(record.job_id, "worker", 60_000)
        fields: dict[str, Any] = {"seed": 7}
        if status is JobStatus.SUCCEEDED:
            fields |= {
                "s3_bucket": "test-bucket",
                "s3_key": f"images/{record.job_id}.png",
                "s3_uri": f"s3://test-bucket/images/{record.job_id}.png",
                "width": 64,
                "height": 48,
                "content_type": "image/png",
            }
        if status is JobStatus.FAILED:
            fields |= {"error_code": "AccessDeniedException", "error_message": "no access"}
        self.store.finish(record.job_id, "worker", status, fields)
        return f"{record.job_id}:job.{status.value}"

    def delivery(self, delivery_id: str) -> dict[str, str]:
        return self.redis.hgetall(keys.webhook_key(delivery_id))  # type: ignore[no-any-return]


@pytest.fixture
def hooks(settings: Settings) -> Iterator[Hooks]:
    settings = settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allowed_hosts": ("127.0.0.1",),
            "webhook_retry_schedule_s": SCHEDULE,
            "webhook_jitter_fraction": 0.0,
            "webhook_timeout_s": 1.0,
            "webhook_handoff_grace_s": 0.2,
        }
    )
    redis = fakeredis.FakeRedis(decode_responses=True)
    s3 = make_s3_client(settings)
    receiver = Receiver()
    client = Client(settings, redis_client=redis)
    client.signing_secrets.create()  # made on purpose, as `imagegen webhook-secret --create`
    yield Hooks(
        client=client,
        store=JobStore(redis, settings.job_retention_s, settings.webhook_handoff_grace_s),
        sender=WebhookSender(redis, settings, s3),
        receiver=receiver,
        redis=redis,
        settings=settings,
    )
    receiver.stop()


def test_a_delivery_is_signed_to_the_spec_and_carries_no_image(hooks: Hooks) -> None:
    delivery_id = hooks.job("/hook")
    assert hooks.sender.deliver(delivery_id).outcome == "delivered"
    [request] = hooks.receiver.received("/hook")
    secret = hooks.client.signing_secrets.current()
    assert independent_signature_check(secret, request["headers"], request["body"])
    headers = {k.lower(): v for k, v in request["headers"].items()}
    job_id = delivery_id.split(":")[0]
    assert headers["webhook-id"] == f"msg_{job_id}_succeeded"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
    assert headers["content-type"] == "application/json"
    event = json.loads(request["body"])
    assert event["type"] == "job.succeeded"
    data = event["data"]
    assert (data["job_id"], data["status"], data["seed"]) == (job_id, "succeeded", 7)
    assert data["s3_uri"] == f"s3://test-bucket/images/{job_id}.png"
    assert data["image_url"].startswith("https://")
    assert "X-Amz-Signature" in data["image_url"]
    assert (data["width"], data["height"], data["metadata"]) == (64, 48, {"order": 42})
    assert data["error"] is None
    assert len(request["body"]) < 20_000
    assert verify(request["headers"], request["body"], secret)["data"]["job_id"] == job_id


def test_the_record_shows_the_delivery_log(hooks: Hooks) -> None:
    delivery_id = hooks.job("/hook")
    hooks.sender.deliver(delivery_id)
    [delivery] = hooks.client.get(delivery_id.split(":")[0]).webhooks
    assert (delivery.state, delivery.attempts) == ("delivered", 1)
    [entry] = delivery.log
    assert entry.status == 200
    assert entry.latency_ms is not None
    assert delivery.delivered_at is not None


def test_a_failed_job_reports_its_error(hooks: Hooks) -> None:
    delivery_id = hooks.job("/hook", status=JobStatus.FAILED)
    hooks.sender.deliver(delivery_id)
    data = json.loads(hooks.receiver.received("/hook")[0]["body"])["data"]
    assert data["status"] == "failed"
    assert data["error"] == {"code": "AccessDeniedException", "message": "no access"}
    assert data["image_url"] is None


def test_a_receiver_failing_three_times_gets_one_success(hooks: Hooks) -> None:
    hooks.receiver.script("/flaky", [(500, {}, 0), (500, {}, 0), (500, {}, 0), (200, {}, 0)])
    delivery_id = hooks.job("/flaky")
    outcomes = [hooks.sender.deliver(delivery_id).outcome for _ in range(4)]
    assert outcomes == ["retry", "retry", "retry", "delivered"]
    assert hooks.sender.deliver(delivery_id).outcome == "final"  # nothing more is sent
    requests = hooks.receiver.received("/flaky")
    assert len(requests) == 4
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1
    [delivery] = hooks.client.get(delivery_id.split(":")[0]).webhooks
    assert [e.status for e in delivery.log] == [500, 500, 500, 200]
    assert delivery.state == "delivered"


def test_retries_run_out_into_the_dead_letter_set(hooks: Hooks) -> None:
    hooks.receiver.script("/down", [(500, {}, 0)])
    delivery_id = hooks.job("/down")
    outcomes = [hooks.sender.deliver(delivery_id).outcome for _ in SCHEDULE]
    assert outcomes == ["retry"] * (len(SCHEDULE) - 1) + ["exhausted"]
    assert hooks.redis.zscore(keys.WEBHOOKS_DLQ_KEY, delivery_id) is not None
    assert hooks.redis.zscore(keys.WEBHOOKS_DUE_KEY, delivery_id) is None
    # An operator sends it again once the receiver is back.
    hooks.receiver.script("/down", [(200, {}, 0)])
    assert hooks.client.webhook_deliveries.recover(since_ms=0) == [delivery_id]
    assert hooks.sender.deliver(delivery_id).outcome == "delivered"


def test_retry_delays_follow_the_schedule(hooks: Hooks) -> None:
    hooks.receiver.script("/down", [(500, {}, 0)])
    delivery_id = hooks.job("/down")
    before = time.time() * 1000
    hooks.sender.deliver(delivery_id)
    due = hooks.redis.zscore(keys.WEBHOOKS_DUE_KEY, delivery_id)
    assert SCHEDULE[1] * 1000 - 50 <= due - before <= SCHEDULE[1] * 1000 + 1000


def test_410_disables_the_endpoint(hooks: Hooks) -> None:
    hooks.receiver.script("/gone", [(410, {}, 0)])
    first = hooks.job("/gone")
    assert hooks.sender.deliver(first).outcome == "disabled"
    second = hooks.job("/gone")
    assert hooks.sender.deliver(second).outcome == "disabled"
    assert len(hooks.receiver.received("/gone")) == 1  # the second was never sent
    # Redelivering re-enables the endpoint.
    hooks.receiver.script("/gone", [(200, {}, 0)])
    hooks.client.webhook_deliveries.redeliver([second])
    assert hooks.sender.deliver(second).outcome == "delivered"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_slow_down_answers_honour_retry_after(hooks: Hooks, status: int) -> None:
    hooks.receiver.script("/busy", [(status, {"Retry-After": "30"}, 0), (200, {}, 0)])
    delivery_id = hooks.job("/busy")
    before = time.time() * 1000
    assert hooks.sender.deliver(delivery_id).outcome == "retry"
    due = hooks.redis.zscore(keys.WEBHOOKS_DUE_KEY, delivery_id)
    assert due - before >= 29_000
    assert json.loads(hooks.delivery(delivery_id)["log"].splitlines()[0])["retry_in_s"] >= 30


def test_redirects_are_not_followed(hooks: Hooks) -> None:
    target = hooks.receiver.url("/elsewhere")
    hooks.receiver.script("/moved", [(302, {"Location": target}, 0)])
    delivery_id = hooks.job("/moved")
    assert hooks.sender.deliver(delivery_id).outcome == "retry"
    assert hooks.receiver.received("/elsewhere") == []
    entry = json.loads(hooks.delivery(delivery_id)["log"].splitlines()[0])
    assert entry["status"] == 302


def test_a_slow_receiver_times_out(hooks: Hooks) -> None:
    hooks.receiver.script("/slow", [(200, {}, 3.0)])
    delivery_id = hooks.job("/slow")
    started = time.monotonic()
    assert hooks.sender.deliver(delivery_id).outcome == "retry"
    assert time.monotonic() - started < 2.5
    entry = json.loads(hooks.delivery(delivery_id)["log"].splitlines()[0])
    assert entry["status"] is None
    assert "timeout" in entry["error"].lower()


def test_a_url_refused_at_send_time_is_not_called(hooks: Hooks) -> None:
    delivery_id = hooks.job("/hook")
    strict = hooks.settings.model_copy(update={"webhook_allowed_hosts": ()})
    sender = WebhookSender(hooks.redis, strict, make_s3_client(strict))
    assert sender.deliver(delivery_id).outcome == "refused"
    assert hooks.receiver.received("/hook") == []
    assert "loopback" in hooks.delivery(delivery_id)["log"]


def test_only_the_chosen_events_are_sent(hooks: Hooks) -> None:
    record = hooks.client.submit(
        "a", webhook_url=hooks.receiver.url("/hook"), webhook_events=["job.started", "job.failed"]
    )
    hooks.store.claim(record.job_id, "worker", 60_000)
    hooks.store.finish(record.job_id, "worker", JobStatus.SUCCEEDED, {})
    assert [d.event for d in hooks.client.get(record.job_id).webhooks] == ["job.started"]


def test_the_status_change_and_its_outbox_entry_are_written_together(hooks: Hooks) -> None:
    """The finish script queues the delivery's message itself; if that message is lost (a worker
    died, Redis was restored from an older snapshot), the sweeper sends it again."""
    clock = ScriptClock(hooks.redis)
    delivery_id = hooks.job("/hook")
    [message] = [json.loads(m) for m in hooks.redis.lrange("webhooks", 0, -1)]
    assert message["headers"]["task"] == "imagegen.deliver_webhook"
    assert json.loads(message["body"])[0] == [delivery_id]
    hooks.redis.delete("webhooks")  # the message is lost

    sweeper = OutboxSweeper(hooks.redis, hooks.settings)
    assert sweeper.sweep_once() == []  # not due before the hand-off grace
    clock.tick(hooks.settings.webhook_handoff_grace_s * 1000 + 50)
    assert sweeper.sweep_once() == [delivery_id]
    [again] = [json.loads(m) for m in hooks.redis.lrange("webhooks", 0, -1)]
    assert json.loads(again["body"])[0] == [delivery_id]
    assert again["properties"]["delivery_tag"] != message["properties"]["delivery_tag"]
    assert sweeper.sweep_once() == []  # moved ahead: not queued twice
    assert hooks.sender.deliver(delivery_id).outcome == "delivered"


def test_one_sweeper_at_a_time(hooks: Hooks) -> None:
    first = OutboxSweeper(hooks.redis, hooks.settings)
    second = OutboxSweeper(hooks.redis, hooks.settings)
    hooks.job("/hook")
    time.sleep(hooks.settings.webhook_handoff_grace_s + 0.05)
    assert len(first.sweep_once()) == 1
    hooks.job("/hook")
    time.sleep(hooks.settings.webhook_handoff_grace_s + 0.05)
    assert second.sweep_once() == []  # the first one holds the lock


def test_an_outbox_entry_whose_delivery_expired_leaves_the_outbox(hooks: Hooks) -> None:
    delivery_id = hooks.job("/hook")
    hooks.redis.delete(keys.webhook_key(delivery_id))  # past its retention
    time.sleep(hooks.settings.webhook_handoff_grace_s + 0.05)
    sweeper = OutboxSweeper(hooks.redis, hooks.settings)
    assert sweeper.sweep_once() == []
    assert hooks.redis.zscore(keys.WEBHOOKS_DUE_KEY, delivery_id) is None


def test_dead_letters_and_disabled_endpoints_are_trimmed_by_age(hooks: Hooks) -> None:
    now_ms = time.time() * 1000
    old_ms = now_ms - (hooks.settings.job_retention_s + 60) * 1000
    for key in (keys.DLQ_KEY, keys.WEBHOOKS_DLQ_KEY, keys.WEBHOOKS_DISABLED_KEY):
        hooks.redis.zadd(key, {"old": old_ms, "recent": now_ms})
    maintenance = Maintenance(
        hooks.redis, hooks.settings.job_retention_s, hooks.settings.webhook_handoff_grace_s
    )
    trimmed = maintenance.trim()
    assert (trimmed.jobs, trimmed.deliveries, trimmed.endpoints) == (1, 1, 1)
    for key in (keys.DLQ_KEY, keys.WEBHOOKS_DLQ_KEY, keys.WEBHOOKS_DISABLED_KEY):
        assert hooks.redis.zrange(key, 0, -1) == ["recent"]


def test_a_replayed_job_gets_new_webhook_ids(hooks: Hooks) -> None:
    delivery_id = hooks.job("/hook", status=JobStatus.FAILED)
    job_id = delivery_id.split(":")[0]
    hooks.client.replay([job_id])
    hooks.client.dispatch.release(hooks.client.get(job_id).model_id)
    hooks.store.claim(job_id, "worker", 60_000)
    hooks.store.finish(job_id, "worker", JobStatus.FAILED, {"error_code": "X"})
    ids = [d.webhook_id for d in hooks.client.get(job_id).webhooks]
    assert ids == [f"msg_{job_id}_failed", f"msg_{job_id}_failed_1"]


def test_secret_rotation_signs_with_both_during_the_overlap(hooks: Hooks) -> None:
    old = hooks.client.signing_secrets.current()
    new = hooks.client.signing_secrets.rotate()
    assert new != old
    assert new.startswith("whsec_")
    delivery_id = hooks.job("/hook")
    hooks.sender.deliver(delivery_id)
    [request] = hooks.receiver.received("/hook")
    assert len(request["headers"]["webhook-signature"].split(" ")) == 2
    assert independent_signature_check(old, request["headers"], request["body"])
    assert independent_signature_check(new, request["headers"], request["body"])


def test_retired_secrets_stop_signing(settings: Settings) -> None:
    secrets = SigningSecrets(fakeredis.FakeRedis(decode_responses=True), overlap_s=0)
    secrets.create()
    old = secrets.current()
    new = secrets.rotate()
    assert secrets.active() == [new]
    assert old != new


class TestVerify:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"type":"job.succeeded","data":{"job_id":"J1"}}'

    def headers(self, secret: str | None = None, at: float | None = None) -> dict[str, str]:
        from datetime import UTC, datetime

        from standardwebhooks.webhooks import Webhook

        sent = datetime.fromtimestamp(at or time.time(), tz=UTC)
        return {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(sent.timestamp())),
            "webhook-signature": Webhook(secret or self.secret).sign("msg_1", sent, self.body),
        }

    def test_a_good_delivery_verifies(self) -> None:
        assert verify(self.headers(), self.body, self.secret)["data"]["job_id"] == "J1"

    def test_a_changed_body_does_not(self) -> None:
        with pytest.raises(WebhookVerificationError, match="no signature matches"):
            verify(self.headers(), self.body.replace("J1", "J2"), self.secret)

    def test_a_stale_timestamp_does_not(self) -> None:
        with pytest.raises(WebhookVerificationError, match="in the past"):
            verify(self.headers(at=time.time() - 600), self.body, self.secret)

    def test_a_missing_header_is_named(self) -> None:
        headers = self.headers()
        del headers["webhook-signature"]
        with pytest.raises(WebhookVerificationError, match="missing webhook-signature"):
            verify(headers, self.body, self.secret)

    def test_any_of_several_secrets_may_match(self) -> None:
        other = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"
        assert verify(self.headers(), self.body, [other, self.secret])
        with pytest.raises(WebhookVerificationError):
            verify(self.headers(), self.body, other)


def test_a_body_that_is_not_utf8_fails_verification_cleanly() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,AAAA",
    }
    with pytest.raises(WebhookVerificationError, match="not UTF-8"):
        verify(headers, b"\xff\xfe{}", secret)


def test_the_sweeper_thread_survives_an_unexpected_error(
    hooks: Hooks, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = hooks.settings.model_copy(update={"webhook_sweep_interval_s": 0.02})
    sweeper = OutboxSweeper(hooks.redis, settings)
    calls: list[int] = []
    real = sweeper.sweep_once

    def flaky() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            msg = "a bug in one sweep"
            raise ValueError(msg)
        return real()

    monkeypatch.setattr(sweeper, "sweep_once", flaky)
    sweeper.start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sweeper.alive
        assert len(calls) >= 3
    finally:
        sweeper.stop()


def test_the_webhooks_queue_reports_the_age_of_its_oldest_message(hooks: Hooks) -> None:
    from imagegen.store.stats import Stats

    hooks.job("/hook")
    hooks.redis.hset(
        keys.webhook_key(hooks.redis.zrange(keys.WEBHOOKS_DUE_KEY, 0, 0)[0]),
        "created_ms",
        int(time.time() * 1000) - 90_000,
    )
    snapshot = Stats(hooks.redis).queues()
    assert snapshot.depth["webhooks"] == 1
    assert 89 < snapshot.oldest_age_s["webhooks"] < 120


def test_a_tenants_webhooks_are_signed_with_its_own_secrets_only(hooks: Hooks) -> None:
    for tenant in ("acme", "other"):
        hooks.client.signing_secrets_for(tenant).create()
    delivery_id = hooks.job("/tenant", tenant="acme")
    assert hooks.sender.deliver(delivery_id).outcome == "delivered"
    [request] = hooks.receiver.received("/tenant")
    own = hooks.client.signing_secrets_for("acme").active()
    other = hooks.client.signing_secrets_for("other").active()
    global_ = hooks.client.signing_secrets.active()
    assert verify(request["headers"], request["body"], own)["data"]["job_id"]
    for wrong in (other, global_):
        with pytest.raises(WebhookVerificationError, match="no signature matches"):
            verify(request["headers"], request["body"], wrong)


def test_where_images_are_streamed_a_tenants_webhook_names_the_apis_path(hooks: Hooks) -> None:
    streaming = hooks.settings.model_copy(update={"api_image_delivery": "stream"})
    sender = WebhookSender(hooks.redis, streaming, make_s3_client(streaming))
    hooks.client.signing_secrets_for("acme").create()
    delivery_id = hooks.job("/streamed", tenant="acme")
    assert sender.deliver(delivery_id).outcome == "delivered"
    [request] = hooks.receiver.received("/streamed")
    data = json.loads(request["body"])["data"]
    assert data["image_url"] == f"/v1/jobs/{data['job_id']}/image"
    assert data["image_url_expires_at"] is None
    assert data["s3_uri"].startswith("s3://")


@pytest.mark.parametrize("in_headers", [True, False])
def test_a_trickling_receiver_cannot_hold_a_delivery_past_its_deadline(
    hooks: Hooks, in_headers: bool
) -> None:
    server = TrickleServer(in_headers=in_headers)
    try:
        record = hooks.client.submit("a", webhook_url=f"http://127.0.0.1:{server.port}/hook")
        hooks.store.claim(record.job_id, "worker", 60_000)
        hooks.store.finish(record.job_id, "worker", JobStatus.SUCCEEDED, {})
        started = time.monotonic()
        result = hooks.sender.deliver(f"{record.job_id}:job.succeeded")
        elapsed_s = time.monotonic() - started
    finally:
        server.close()
    assert hooks.settings.webhook_timeout_s == 1.0
    assert elapsed_s < 2.0
    assert result.outcome == "retry"
    assert "timeout" in hooks.delivery(f"{record.job_id}:job.succeeded")["log"]


def test_a_busy_endpoint_defers_a_delivery_without_using_an_attempt(hooks: Hooks) -> None:

    capped = hooks.settings.model_copy(update={"webhook_max_in_flight_per_endpoint": 1})
    sender = WebhookSender(hooks.redis, capped, make_s3_client(capped))
    delivery_id = hooks.job("/hook")
    endpoint = f"http://127.0.0.1:{hooks.receiver.url('/').split(':')[2].split('/')[0]}"
    deliveries = Deliveries(hooks.redis)
    assert deliveries.take_endpoint_slot(endpoint, 1, 60_000, "another-delivery")
    assert sender.deliver(delivery_id).outcome == "deferred"
    assert hooks.receiver.received("/hook") == []
    state = hooks.delivery(delivery_id)
    assert (state["state"], state["attempts"]) == ("pending", "0")
    deliveries.free_endpoint_slot(endpoint, "another-delivery")
    assert sender.deliver(delivery_id).outcome == "delivered"
    assert hooks.delivery(delivery_id)["attempts"] == "1"


def test_a_finish_takes_its_webhooks_endpoint_slot_and_the_delivery_gives_it_back(
    hooks: Hooks,
) -> None:
    """The job's finish takes the slot of its first delivery with the claim (no round trip of
    its own); with the endpoint's slots all held, the delivery is claimed without one and the
    sender defers it as for any busy endpoint."""
    from worker.webhooks import endpoint_slot_for

    capped = hooks.settings.model_copy(update={"webhook_max_in_flight_per_endpoint": 1})
    sender = WebhookSender(hooks.redis, capped, make_s3_client(capped))
    deliveries = Deliveries(hooks.redis)
    url = hooks.receiver.url("/slot")
    endpoint, cap, slot = endpoint_slot_for(url, capped) or ("", 0, "")
    assert (endpoint, cap) == (url.rsplit("/", 1)[0], 1)
    inflight = keys.endpoint_inflight_key(endpoint)

    def finish(slot_id: str) -> DeliveryClaim:
        job = hooks.client.submit("a lighthouse", webhook_url=url)
        hooks.store.claim(job.job_id, "w", 60_000)
        [claim] = hooks.store.finish(
            job.job_id,
            "w",
            JobStatus.SUCCEEDED,
            {},
            send_now=1,
            delivery_lease_ms=60_000,
            slot=(endpoint, cap, slot_id),
        ).claims
        return claim

    first = finish(slot)
    assert first.slot == slot
    assert hooks.redis.zrange(inflight, 0, -1) == [slot]
    second = finish("second")  # the one slot is held: claimed without it
    assert second.slot == ""
    assert sender.deliver_claimed(second).outcome == "deferred"
    assert sender.deliver_claimed(first).outcome == "delivered"
    assert hooks.redis.zcard(inflight) == 0  # given back with the record of the attempt
    assert deliveries.take_endpoint_slot(endpoint, 1, 60_000, "next")
    assert len(hooks.receiver.received("/slot")) == 1


def test_crossing_a_soft_budget_sends_the_tenant_a_signed_warning(hooks: Hooks) -> None:
    tenant = f"warned-{uuid.uuid4().hex[:6]}"
    hooks.client.set_tenant_webhook(tenant, hooks.receiver.url("/budget"))
    hooks.client.signing_secrets_for(tenant).create()
    hooks.client.set_budget(Budget(tenant, daily_soft=0.05, monthly_hard=10.0))
    first = hooks.client.submit("under the soft budget", tenant=tenant)
    second = hooks.client.submit("past it", tenant=tenant)
    third = hooks.client.submit("past it again", tenant=tenant)
    assert [d.event for d in hooks.client.get(first.job_id).webhooks] == []
    [warning] = hooks.client.get(second.job_id).webhooks
    assert warning.event == "tenant.budget_warning"
    assert hooks.client.get(third.job_id).webhooks == []  # once a period
    assert hooks.sender.deliver(warning.delivery_id).outcome == "delivered"
    [request] = hooks.receiver.received("/budget")
    secret = hooks.client.signing_secrets_for(tenant).current()
    assert independent_signature_check(secret, request["headers"], request["body"])
    event = json.loads(request["body"])
    assert event["type"] == "tenant.budget_warning"
    data = event["data"]
    assert (data["tenant"], data["job_id"]) == (tenant, second.job_id)
    assert data["daily"]["soft_budget_usd"] == 0.05
    assert data["daily"]["reserved_usd"] == pytest.approx(0.12)
    assert data["monthly"]["hard_budget_usd"] == 10.0
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["webhook-id"].startswith(f"msg_budget_{tenant}_d_")


def test_a_finished_jobs_webhook_is_claimed_by_its_finish_and_sent_by_its_worker(
    hooks: Hooks,
) -> None:
    """The worker that finished a job sends its webhook at once: the final transition claims it
    for its first attempt (no message on the webhooks queue, no claim of its own), and the
    outbox entry stays as the fallback, due when the claim's lease ends."""
    job = hooks.client.submit("a lighthouse", webhook_url=hooks.receiver.url("/now"))
    assert hooks.store.claim(job.job_id, "w", 60_000).state.value == "claimed"
    hooks.redis.delete(WEBHOOK_QUEUE)
    before_ms = int(time.time() * 1000)
    finished = hooks.store.finish(
        job.job_id, "w", JobStatus.SUCCEEDED, {"seed": 3}, send_now=2, delivery_lease_ms=60_000
    )
    [claim] = finished.claims
    assert finished.deliveries == [f"{job.job_id}:job.succeeded"]
    assert (claim.state, claim.attempt, claim.event) == ("claimed", 1, "job.succeeded")
    assert claim.url == hooks.receiver.url("/now")
    assert claim.record is not None
    assert (claim.record.status, claim.record.seed) == (JobStatus.SUCCEEDED, 3)
    assert hooks.redis.llen(WEBHOOK_QUEUE) == 0
    delivery = hooks.delivery(claim.delivery_id)
    assert (delivery["state"], delivery["attempts"]) == ("sending", "1")
    due = hooks.redis.zscore(keys.WEBHOOKS_DUE_KEY, claim.delivery_id)
    assert due is not None
    assert due >= before_ms + 60_000
    # Nobody else may take it while the lease runs.
    assert Deliveries(hooks.redis).claim(claim.delivery_id, 1000).state == "busy"
    assert hooks.sender.deliver_claimed(claim).outcome == "delivered"
    [request] = hooks.receiver.received("/now")
    assert json.loads(request["body"])["data"]["seed"] == 3
    assert hooks.delivery(claim.delivery_id)["state"] == "delivered"
    # Without room to send at once, the message is queued as before.
    other = hooks.client.submit("a harbour", webhook_url=hooks.receiver.url("/now"))
    hooks.store.claim(other.job_id, "w", 60_000)
    assert hooks.store.finish(other.job_id, "w", JobStatus.FAILED, {}).claims == []
    assert hooks.redis.llen(WEBHOOK_QUEUE) == 1


def test_a_claimed_webhook_its_worker_never_sent_is_sent_when_the_lease_ends(
    hooks: Hooks,
) -> None:
    job = hooks.client.submit("a lighthouse", webhook_url=hooks.receiver.url("/late"))
    hooks.store.claim(job.job_id, "w", 60_000)
    [claim] = hooks.store.finish(
        job.job_id, "w", JobStatus.SUCCEEDED, {}, send_now=1, delivery_lease_ms=50
    ).claims
    # The worker died before sending it: once the lease ends, the outbox has it due.
    time.sleep(0.1)
    sweep = Maintenance(hooks.redis, hooks.settings.job_retention_s, 30.0)
    assert claim.delivery_id in sweep.send_due_deliveries()
    result = hooks.sender.deliver(claim.delivery_id)
    assert result.outcome == "delivered"
    assert hooks.delivery(claim.delivery_id)["attempts"] == "2"
    assert len(hooks.receiver.received("/late")) == 1


def test_a_finish_claims_no_delivery_for_a_disabled_endpoint(hooks: Hooks) -> None:
    url = hooks.receiver.url("/gone")
    hooks.redis.zadd(keys.WEBHOOKS_DISABLED_KEY, {url: 1})
    job = hooks.client.submit("a lighthouse", webhook_url=url)
    hooks.store.claim(job.job_id, "w", 60_000)
    finished = hooks.store.finish(
        job.job_id, "w", JobStatus.SUCCEEDED, {}, send_now=2, delivery_lease_ms=60_000
    )
    assert finished.claims == []
    delivery = hooks.delivery(f"{job.job_id}:job.succeeded")
    assert delivery["state"] == "disabled"
    assert hooks.redis.zscore(keys.WEBHOOKS_DUE_KEY, f"{job.job_id}:job.succeeded") is None
    assert hooks.redis.llen(WEBHOOK_QUEUE) == 0


def test_send_now_takes_what_its_threads_can_hold_and_gives_back_what_it_did_not_use() -> None:
    release = threading.Event()
    sent: list[str] = []

    def send(claim: DeliveryClaim) -> None:
        release.wait(5)
        sent.append(claim.delivery_id)

    send_now = SendNow(send, threads=1)
    # One thread, eight waiting per thread: room for nine, then none (the finish then queues).
    reserved = [send_now.reserve(2) for _ in range(5)]
    assert reserved == [2, 2, 2, 2, 1]
    assert send_now.reserve(2) == 0
    claims = [DeliveryClaim("claimed", 1, delivery_id=f"J{i}:job.succeeded") for i in range(9)]
    for i, room in enumerate(reserved):
        send_now.send(claims[2 * i : 2 * i + 1], room)  # one delivery each: the rest given back
    assert send_now.reserve(9) == 4
    release.set()
    deadline = time.monotonic() + 5
    while len(sent) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    send_now.close()
    assert sorted(sent) == sorted(c.delivery_id for c in claims[0:9:2])
