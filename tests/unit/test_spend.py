"""Budgets and spend (``imagegen.store.spend`` and the dispatcher's reservations), on fakeredis
(with Lua) and on a real Redis."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from imagegen.contract import JobSpec
from imagegen.records import JobStatus, NewJob
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import JobStore
from imagegen.store.spend import Budget, Ledger, periods, rows_as_csv
from imagegen.store.stats import Stats

CORE = "stability.stable-image-core-v1:0"  # $0.04 an image
LEASE_MS = 60_000


class Rig:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None, rate_limit_rpm=0, dispatch_lookahead_s=3600
        )
        self.store = JobStore.from_settings(redis, self.settings)
        self.dispatch = Dispatch(redis, self.settings)
        self.ledger = Ledger(redis, self.settings)
        self.tenant = f"t{uuid.uuid4().hex[:8]}"
        self.reads = JobReads(redis)
        self.count = 0

    def submit(self, n: int) -> list[str]:
        spec = JobSpec.parse({"request": {"prompt": "p"}})
        now = int(time.time() * 1000)
        ids = [f"{self.tenant}.{self.count + i}" for i in range(n)]
        self.count += n
        self.store.create([NewJob(i, CORE, spec, now, tenant=self.tenant) for i in ids])
        return ids

    def statuses(self, ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for job_id in ids:
            state = self.redis.hget(keys.job_key(job_id), "place") or ""
            status = self.redis.hget(keys.job_key(job_id), "status")
            name = state if status == "queued" else status
            found[name] = found.get(name, 0) + 1
        return found

    def run(self, job_id: str) -> None:
        """What a worker does with a released job that gets its image."""
        assert self.store.claim(job_id, "w", LEASE_MS).state.value == "claimed"
        self.store.finish(job_id, "w", JobStatus.SUCCEEDED, {}, bought=True)

    def today(self) -> Any:
        return self.ledger.period(self.tenant, periods()[0])


def test_a_hard_budget_worth_ten_images_buys_exactly_ten(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.ledger.set_budget(Budget(rig.tenant, daily_hard=0.40, on_exceed="fail"))
    ids = rig.submit(20)
    rig.dispatch.release(CORE)
    assert rig.statuses(ids) == {"released": 10, "budget_exceeded": 10}
    assert rig.today().reserved_usd == pytest.approx(0.40)
    for job_id in ids:
        if rig.redis.hget(keys.job_key(job_id), "place") == "released":
            rig.run(job_id)
    today = rig.today()
    assert (today.spent_usd, today.reserved_usd) == (pytest.approx(0.40), 0)
    record = rig.reads.get(ids[0])
    assert (record.status, record.cost_usd) == (JobStatus.SUCCEEDED, pytest.approx(0.04))
    refused = rig.reads.get(ids[-1])
    assert (refused.status, refused.attempts, refused.cost_usd) == (
        JobStatus.BUDGET_EXCEEDED,
        0,
        None,
    )


def test_past_a_hard_budget_jobs_wait_for_more_room(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.ledger.set_budget(Budget(rig.tenant, monthly_hard=0.20))  # on_exceed: wait
    ids = rig.submit(8)
    assert rig.dispatch.release(CORE).released == 5
    assert rig.statuses(ids) == {"released": 5, "waiting": 3}
    other = Rig(any_redis)  # another tenant is not held back
    other_ids = other.submit(2)
    other.dispatch.release(CORE)
    assert other.statuses(other_ids) == {"released": 2}
    rig.ledger.set_budget(Budget(rig.tenant, monthly_hard=0.28))
    assert rig.dispatch.release(CORE).released == 2
    assert rig.statuses(ids) == {"released": 7, "waiting": 1}


def test_concurrent_releases_never_overspend(real_redis: Any) -> None:
    rig = Rig(real_redis)
    rig.ledger.set_budget(Budget(rig.tenant, daily_hard=0.40, on_exceed="wait"))
    ids = rig.submit(60)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda _: rig.dispatch.release(CORE), range(40)))
    assert rig.statuses(ids) == {"released": 10, "waiting": 50}
    assert rig.today().reserved_usd == pytest.approx(0.40)


def test_a_job_that_ends_without_an_image_gives_its_reservation_back(any_redis: Any) -> None:
    rig = Rig(any_redis)
    canceled, failed, expired = rig.submit(3)
    rig.dispatch.release(CORE)
    assert rig.today().reserved_usd == pytest.approx(0.12)
    rig.store.cancel(canceled)
    rig.store.claim(failed, "w", LEASE_MS)
    rig.store.finish(failed, "w", JobStatus.FAILED, {"error_code": "AccessDeniedException"})
    rig.redis.hset(keys.job_key(expired), "expires_ms", 1)
    rig.store.claim(expired, "w", LEASE_MS)  # its deadline passed before it started
    today = rig.today()
    assert (today.spent_usd, today.reserved_usd) == (0, 0)


def test_a_retry_keeps_its_reservation_and_is_billed_once(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.ledger.set_budget(Budget(rig.tenant, daily_hard=0.04))
    [job] = rig.submit(1)
    rig.dispatch.release(CORE)
    rig.store.claim(job, "w", LEASE_MS)
    rig.store.release_for_retry(
        job, "w", attempt=1, error_code="ThrottlingException", message="m", delay_s=0
    )
    assert rig.dispatch.release(CORE).released == 1  # its own reservation, not a second one
    assert rig.today().reserved_usd == pytest.approx(0.04)
    rig.run(job)
    assert (rig.today().spent_usd, rig.today().reserved_usd) == (pytest.approx(0.04), 0)


def test_crossing_a_soft_budget_is_counted_once(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.ledger.set_budget(Budget(rig.tenant, daily_soft=0.10))
    rig.submit(5)
    rig.dispatch.release(CORE)
    assert rig.today().soft_budget_crossed
    warnings = [
        c.value
        for c in Stats(any_redis).counters()
        if c.kind == "budget_warnings" and c.labels == ("daily",)
    ]
    assert warnings == [1]
    rig.submit(5)
    assert rig.dispatch.release(CORE).released == 5
    assert [c.value for c in Stats(any_redis).counters() if c.kind == "budget_warnings"] == [1]


def test_spend_reports_by_day_and_model_and_as_csv(any_redis: Any) -> None:
    rig = Rig(any_redis)
    ids = rig.submit(3)
    rig.dispatch.release(CORE)
    for job_id in ids:
        rig.run(job_id)
    [row] = rig.ledger.rows(rig.tenant)
    assert (row.model_id, row.images, row.spend_usd) == (CORE, 3, pytest.approx(0.12))
    assert row.period == periods()[0].removeprefix("d:")
    lines = rows_as_csv([row]).splitlines()
    assert lines[0] == "tenant,day,model_id,images,spend_usd,cache_hits,saved_usd"
    assert lines[1] == f"{rig.tenant},{row.period},{CORE},3,0.120000,0,0.000000"
    assert rig.tenant in rig.ledger.tenants()


def test_a_budget_is_a_positive_amount(any_redis: Any) -> None:
    with pytest.raises(ValueError, match="0 or more"):
        Rig(any_redis).ledger.set_budget(Budget("acme", daily_hard=-1))


def test_metrics_show_each_spending_tenants_spend_reservations_and_budgets(any_redis: Any) -> None:
    """More tenants than one snapshot call reads: every one's own figures, none shifted."""
    from prometheus_client.parser import text_string_to_metric_families

    from imagegen.store.spend import SNAPSHOT_TENANTS
    from producer.api.exposition import render
    from producer.api.metrics import FleetCollector

    rigs = [Rig(any_redis) for _ in range(SNAPSHOT_TENANTS + 7)]
    for index, rig in enumerate(rigs):
        if index % 5 == 0:
            rig.ledger.set_budget(Budget(rig.tenant, daily_soft=0.01, monthly_hard=100.0 + index))
        ids = rig.submit(index % 3 + 2)
        rig.dispatch.release(CORE)
        # The first stays running (reserved, not spent): the lookahead counts only released
        # jobs not yet claimed, and so many tenants' would fill it.
        assert rig.store.claim(ids[0], "w", LEASE_MS).state.value == "claimed"
        for job_id in ids[1:]:
            rig.run(job_id)
    text = render(FleetCollector(any_redis, rigs[0].settings).collect()).decode()
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    for index, rig in enumerate(rigs):
        day = (("period", "day"), ("tenant", rig.tenant))
        spent = found[("imagegen_tenant_spend_usd", day)]
        assert spent == pytest.approx(0.04 * (index % 3 + 1))
        assert found[("imagegen_tenant_reserved_usd", day)] == pytest.approx(0.04)
        month_hard = (("kind", "hard"), ("period", "month"), ("tenant", rig.tenant))
        crossed = found[("imagegen_tenant_soft_budget_crossed", day)]
        if index % 5 == 0:
            assert found[("imagegen_tenant_budget_usd", month_hard)] == 100.0 + index
            assert crossed == 1.0
        else:
            assert ("imagegen_tenant_budget_usd", month_hard) not in found
            assert crossed == 0.0
