"""Each rule the declared lifecycle added, shown on the case that broke without it: tenants that
cannot be served, waits past the retention, deadlines behind a backlog, reads at many tenants,
followers, booking, clocks, redriven jobs and ordering. On fakeredis and on a real Redis; the
figures of Redis commands on a real Redis only."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from imagegen.contract import JobSpec
from imagegen.ids import new_job_id
from imagegen.records import JobStatus, NewJob
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings
from imagegen.store.context import JobContext
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import CallMark, JobStore
from imagegen.store.maintenance import Maintenance
from imagegen.store.spend import Budget, Ledger, periods
from producer.client import Client

MODEL = "stability.stable-image-core-v1:0"  # $0.04 an image
LEASE_MS = 60_000
DAY_MS = 86_400_000


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {"rate_limit_rpm": 0, "dispatch_lookahead_s": 3600}
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


class Rig:
    def __init__(self, redis: Any, retention_s: int | None = None, **values: Any) -> None:
        self.redis = redis
        self.settings = settings(**values)
        context = JobContext.from_settings(self.settings)
        if retention_s is not None:
            context = JobContext(retention_s, context.webhook_grace_ms, context.ledger_ttl_s)
        self.store = JobStore(redis, context.retention_s, redrive_grace_s=60, context=context)
        self.dispatch = Dispatch(redis, self.settings)
        self.ledger = Ledger(redis, self.settings)
        self.reads = JobReads(redis)
        self.count = 0
        self.now_ms: float | None = None

    def use_clock(self, now_ms: float) -> None:
        """Every script runs on this clock from now on (``tick`` moves it)."""
        self.now_ms = now_ms
        Scripts.of(self.redis).clock = lambda: self.now_ms or ""

    def tick(self, ms: float) -> None:
        assert self.now_ms is not None
        self.now_ms += ms

    def submit(self, tenant: str | None, n: int = 1, **envelope: Any) -> list[str]:
        request = {"prompt": "a lighthouse", **envelope.pop("request", {})}
        spec = JobSpec.parse({"request": request, **envelope})
        created = int(self.now_ms or time.time() * 1000)
        jobs = []
        for _ in range(n):
            self.count += 1
            jobs.append(
                NewJob(f"{tenant or 'none'}.j{self.count:05d}", MODEL, spec, created, tenant)
            )
        outcomes = self.store.create(jobs, dispatch=self.dispatch)
        assert {o.value for o, _ in outcomes} == {"created"}
        return [job.job_id for job in jobs]

    def place(self, job_id: str) -> str:
        return str(self.redis.hget(keys.job_key(job_id), "place"))

    def places(self, job_ids: list[str]) -> Counter[str]:
        return Counter(self.place(j) for j in job_ids)

    def release_all(self) -> None:
        while self.dispatch.release(MODEL).released:
            pass

    def calling(self, tenant: str, owner: str) -> str:
        """A new job of ``tenant``, released, claimed by ``owner`` and its call marked."""
        [job] = self.submit(tenant)
        self.release_all()
        self.store.claim(job, owner, LEASE_MS)
        assert self.store.mark_calling(job, owner, calling=True) is CallMark.OK
        return job


def commands(redis: Any) -> int:
    """Commands Redis has run so far (a real Redis)."""
    return sum(int(v["calls"]) for v in redis.info("commandstats").values())


# -- 1, 2: tenants that cannot be served ------------------------------------------------------


@pytest.mark.parametrize("why", ["budget", "concurrency"])
def test_forty_tenants_that_cannot_be_served_do_not_stop_a_paying_tenant(
    any_redis: Any, why: str
) -> None:
    rig = Rig(any_redis)
    for i in range(40):
        tenant = f"stuck{i:02d}"
        if why == "budget":
            rig.ledger.set_budget(Budget(tenant, daily_hard=0.0))
            rig.submit(tenant)
        else:
            rig.dispatch.set_tenant_limits(tenant, max_concurrency=1)
            rig.submit(tenant, 2)  # one released (its slot), one waiting
    paying = rig.submit("paying", 5)
    rig.release_all()
    assert rig.places(paying) == {"released": 5}
    paused = rig.dispatch.paused(MODEL)
    assert len(paused) == 40
    assert set(paused.values()) == {why}


def test_a_release_costs_the_same_however_many_tenants_cannot_be_served(
    real_redis: Any,
) -> None:
    costs = []
    for stuck in (1, 40):
        real_redis.flushdb()
        rig = Rig(real_redis)
        for i in range(stuck):
            rig.ledger.set_budget(Budget(f"stuck{i:02d}", daily_hard=0.0))
            rig.submit(f"stuck{i:02d}")
        first = rig.dispatch.release(MODEL)  # pauses them
        assert first.next_s is not None
        assert first.next_s > 60  # not before the day ends
        before = commands(real_redis)
        answer = rig.dispatch.release(MODEL)
        costs.append(commands(real_redis) - before)
        # No spinning: the loops sleep until the day ends, not 50 ms.
        assert answer.next_s is not None
        assert answer.next_s > 60
    assert costs[0] == costs[1]
    assert costs[1] <= 8  # the function call and a handful of reads


# -- 3: a wait longer than the retention ------------------------------------------------------


def test_an_open_job_never_expires_however_long_it_waits(any_redis: Any) -> None:
    rig = Rig(any_redis, retention_s=1)
    rig.ledger.set_budget(Budget("acme", daily_hard=0.0))
    [job] = rig.submit("acme")
    rig.release_all()
    time.sleep(1.3)  # longer than the retention
    record = rig.reads.get(job)
    assert (record.status, record.place) == (JobStatus.QUEUED, "waiting")
    assert any_redis.ttl(keys.job_key(job)) == -1
    assert rig.reads.open_counts("acme") == (1, 1)
    rig.ledger.set_budget(Budget("acme"))
    rig.release_all()
    assert rig.store.claim(job, "w", LEASE_MS).state.value == "claimed"
    rig.store.finish(job, "w", JobStatus.SUCCEEDED, {"s3_key": "k"})
    assert 0 < any_redis.pttl(keys.job_key(job)) <= 1000  # final: it gets its retention
    assert rig.reads.open_counts("acme") == (0, 0)


# -- 4: deadlines --------------------------------------------------------------------------


def test_a_deadline_is_met_ahead_of_the_tenants_backlog(any_redis: Any) -> None:
    # A token a minute: none comes while the test runs, however slowly the 298 go in (at 60 a
    # minute, a slow machine's second let the deadline job go before it was looked at).
    slow = settings(rate_limit_rpm=1, rate_limit_burst=1)
    client = Client(slow, redis_client=any_redis)
    client.submit_many([{"request": {"prompt": f"p{i}"}} for i in range(298)], tenant="acme")
    due = datetime.now(UTC) + timedelta(seconds=120)
    soon = client.submit("due soon", tenant="acme", expires_at=due)  # not refused
    found = client.get(soon.job_id)
    assert found.queue_position == 1  # earliest deadline first
    assert found.estimated_start_at is not None
    assert found.estimated_start_at < due


def test_an_estimate_counts_the_tenants_own_rate_cap(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=6000)
    rig.dispatch.set_tenant_limits("acme", rate_rpm=6)
    rig.submit("acme", 30)
    rig.release_all()
    [estimate] = rig.dispatch.estimates(MODEL, "acme", "interactive", [(None, 0)])
    assert estimate.start_in_s is not None
    # 29 waiting before it, at 6 a minute: about 290 s, not the model's 6,000 a minute.
    assert 270 <= estimate.start_in_s <= 300


# -- 5: reads at many tenants ---------------------------------------------------------------


def test_a_position_counts_past_a_thousand_tenants(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=60, rate_limit_burst=1)
    tenants = [f"t{i:04d}" for i in range(1500)]
    for tenant in tenants:
        rig.submit(tenant, 2)
    [mine] = rig.submit("zz-late")
    found = rig.dispatch.position(mine, MODEL)
    assert found is not None
    # Every other tenant's first job goes first (their tags come first, or tie), less those
    # released while the tenants submitted (a token a second, more on a slow machine): counted
    # past the thousand tenants.
    released = any_redis.zcard(keys.dispatch_keys(MODEL).released)
    assert released >= 1
    assert 1500 - released <= found.position <= 1503 - released


def test_a_position_read_costs_the_same_at_ten_and_a_thousand_tenants(real_redis: Any) -> None:
    costs = []
    for count in (10, 1000):
        real_redis.flushdb()
        rig = Rig(real_redis, rate_limit_rpm=60, rate_limit_burst=1)
        for i in range(count):
            rig.submit(f"t{i:04d}", 3)
        [mine] = rig.submit("mine", 1)
        rig.dispatch.position(mine, MODEL)  # the library loaded
        before = commands(real_redis)
        rig.dispatch.position(mine, MODEL)
        costs.append(commands(real_redis) - before)
        before = commands(real_redis)
        rig.dispatch.shares(MODEL, "mine")
        costs.append(commands(real_redis) - before)
    assert costs[0] == costs[2]  # a position read
    assert costs[1] == costs[3]  # one tenant's share


# -- 8: cache followers ----------------------------------------------------------------------


def test_a_follower_follows_only_a_job_already_released_or_running(any_redis: Any) -> None:
    rig = Rig(any_redis, cache_ttl_s=3600)
    for tenant in ("a", "b"):
        rig.dispatch.redis.hset(keys.tenant_key(tenant), "cache_shared", "1")
    rig.ledger.set_budget(Budget("a", daily_hard=0.0))  # a's job waits, paused
    [leader] = rig.submit("a", request={"seed": 42})
    rig.release_all()
    assert rig.place(leader) == "waiting"
    [other] = rig.submit("b", request={"seed": 42})
    rig.release_all()
    # b's identical job does not wait for a's budget: it runs (and leads) itself.
    assert rig.place(other) == "released"
    [third] = rig.submit("b", request={"seed": 42})
    assert rig.place(third) == "following"  # b's job is released: this one follows it


# -- 9: money and clocks ---------------------------------------------------------------------


def test_an_attempt_that_lost_its_lease_books_nothing_more(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.use_clock(time.time() * 1000)
    job = rig.calling("acme", "slow")
    rig.tick(LEASE_MS + 1)
    assert rig.store.redrive_due() == [job]  # books the call it found in flight
    late = rig.store.finish(job, "slow", JobStatus.SUCCEEDED, {"s3_key": "k"}, bought=True)
    assert late.outcome.value == "lease"
    [row] = rig.ledger.rows("acme")
    assert (row.images, row.spend_usd) == (1, pytest.approx(0.04))


def test_budget_periods_are_the_redis_clock(any_redis: Any) -> None:
    rig = Rig(any_redis)
    future = datetime(2031, 1, 1, 12, tzinfo=UTC)
    rig.use_clock(future.timestamp() * 1000)
    rig.ledger.set_budget(Budget("acme", daily_hard=0.04))
    [first, second] = rig.submit("acme", 2)
    rig.release_all()
    assert rig.places([first, second]) == {"released": 1, "waiting": 1}
    day, month = periods(future.timestamp())
    assert (day, month) == ("d:2031-01-01", "m:2031-01")
    assert rig.ledger.period("acme", day).reserved_usd == pytest.approx(0.04)
    assert rig.ledger.period("acme", periods()[0]).reserved_usd == 0  # not the host's today
    rig.tick(DAY_MS)  # the next day on Redis's clock: room again
    rig.release_all()
    assert rig.places([first, second]) == {"released": 2}


def test_a_ledger_is_kept_its_retention_after_its_period_ends(any_redis: Any) -> None:
    # Kept 7 days: a month's ledger must still hold the month's spend (its hard budget) on the
    # 25th, however the month's bookings fall.
    rig = Rig(any_redis, spend_retention_days=7)
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    rig.use_clock(now.timestamp() * 1000)
    [job] = rig.submit("acme")
    rig.release_all()  # its reservation makes today's and this month's ledgers
    rig.store.claim(job, "w", LEASE_MS)
    rig.store.finish(job, "w", JobStatus.SUCCEEDED, {"s3_key": "k"}, bought=True)
    day, month = periods(now.timestamp())
    kept = timedelta(days=7)
    expected = {
        keys.spend_key("acme", day): datetime(2026, 12, 8, tzinfo=UTC) + kept - now,
        keys.spend_key("acme", month): datetime(2027, 1, 1, tzinfo=UTC) + kept - now,
        # The tenant's list of days with spend lives as long as the newest day it lists.
        keys.spend_days_key("acme"): datetime(2026, 12, 8, tzinfo=UTC) + kept - now,
    }
    for key, left in expected.items():
        assert any_redis.pttl(key) / 1000 == pytest.approx(left.total_seconds(), abs=60), key


def test_spend_reports_list_a_tenant_while_its_months_ledger_is_kept(any_redis: Any) -> None:
    rig = Rig(any_redis, spend_retention_days=7)
    start = datetime(2026, 12, 1, 12, tzinfo=UTC)
    rig.use_clock(start.timestamp() * 1000)
    [job] = rig.submit("acme")
    rig.release_all()
    rig.store.claim(job, "w", LEASE_MS)
    rig.store.finish(job, "w", JobStatus.SUCCEEDED, {"s3_key": "k"}, bought=True)
    trim = Maintenance(any_redis, 3600, 30, ledger_ttl_s=7 * DAY_MS // 1000).trim
    rig.tick(20 * DAY_MS)  # past the retention since the booking; December's ledger is kept
    assert trim().spend_tenants == 0
    assert rig.ledger.tenants() == ["acme"]
    rig.tick(20 * DAY_MS)  # January 10th: December ended more than 7 days ago
    assert trim().spend_tenants == 1
    assert rig.ledger.tenants() == []


# -- 11: a redriven job ----------------------------------------------------------------------


@pytest.mark.parametrize("on_exceed", ["wait", "fail"])
def test_a_redriven_job_is_queued_and_needs_no_budget_for_an_image_it_bought(
    any_redis: Any, on_exceed: str
) -> None:
    rig = Rig(any_redis)
    rig.use_clock(time.time() * 1000)
    rig.ledger.set_budget(Budget("acme", daily_hard=0.04, on_exceed=on_exceed))  # type: ignore[arg-type]
    [job] = rig.submit("acme")
    rig.release_all()
    rig.store.claim(job, "w1", LEASE_MS)
    # The image is bought (and booked: the budget is now used up), its upload failed.
    rig.store.release_for_retry(
        job, "w1", attempt=1, error_code="StorageError", message="m", delay_s=0, bought=True
    )
    rig.release_all()
    rig.store.claim(job, "w2", LEASE_MS)
    rig.tick(LEASE_MS + 1)
    assert rig.store.redrive_due() == [job]  # w2 died before calling
    record = rig.reads.get(job)
    assert (record.status, record.place) == (JobStatus.QUEUED, "waiting")
    rig.release_all()
    # No budget room is needed to adopt the image it paid for.
    assert rig.place(job) == "released"
    assert rig.ledger.period("acme", periods(rig.now_ms / 1000)[0]).spent_usd == pytest.approx(0.04)


def test_a_job_that_waited_for_its_budget_once_reserves_only_when_it_must_call(
    any_redis: Any,
) -> None:
    rig = Rig(any_redis)
    rig.use_clock(time.time() * 1000)
    rig.ledger.set_budget(Budget("acme", daily_hard=0.04, on_exceed="fail"))
    [job] = rig.submit("acme")
    rig.release_all()
    rig.store.claim(job, "w1", LEASE_MS)
    # Attempt 1 bought an image and lost it (booked by its retry): spend $0.04, the budget's all.
    retry = {"message": "m", "delay_s": 0}
    rig.store.release_for_retry(job, "w1", attempt=1, error_code="E", bought=True, **retry)
    rig.release_all()
    rig.store.claim(job, "w2", LEASE_MS)
    assert rig.store.mark_calling(job, "w2", calling=True) is CallMark.BUDGET
    rig.store.release_for_retry(job, "w2", attempt=2, error_code="BudgetWait", free=True, **retry)
    rig.ledger.set_budget(Budget("acme", daily_hard=0.08, on_exceed="fail"))  # room for one more
    rig.release_all()
    rig.store.claim(job, "w3", LEASE_MS)
    assert rig.store.mark_calling(job, "w3", calling=True) is CallMark.OK
    # Attempt 3 bought its image; the upload failed, the image is parked and booked.
    rig.store.park_image(job, 7, "aGVsbG8=")
    rig.store.release_for_retry(job, "w3", attempt=3, error_code="S3", bought=True, **retry)
    rig.release_all()
    # Its re-run only uploads the parked image: no new reservation, no budget_exceeded.
    assert rig.place(job) == "released"
    assert any_redis.exists(keys.parked_image_key(job)) == 1
    day = periods(rig.now_ms / 1000)[0]
    spend = rig.ledger.period("acme", day)
    assert (spend.spent_usd, spend.reserved_usd) == (pytest.approx(0.08), 0)


def test_a_replayed_job_starts_afresh_and_reserves_its_price(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.use_clock(time.time() * 1000)
    job = rig.calling("acme", "w1")
    failed = {"error_code": "InvalidModelOutput"}
    rig.store.finish(job, "w1", JobStatus.FAILED, failed, bought=True)  # billed, then failed
    rig.ledger.set_budget(Budget("acme", daily_hard=0.04, on_exceed="fail"))  # all spent
    assert rig.store.replay([job]) == [job]
    rig.release_all()
    # A new run must buy a new image: the budget decides at its release, as for a new job.
    record = rig.reads.get(job)
    assert (record.status, record.place) == (JobStatus.BUDGET_EXCEEDED, "final")


def test_a_replayed_job_warns_of_the_soft_budget_it_crosses_on_another_day(
    any_redis: Any,
) -> None:
    rig = Rig(any_redis)
    rig.use_clock(datetime(2026, 12, 7, 12, tzinfo=UTC).timestamp() * 1000)
    any_redis.hset(keys.tenant_key("acme"), "webhook_url", "https://example.com/hook")
    rig.ledger.set_budget(Budget("acme", daily_soft=0.04))
    [job] = rig.submit("acme")
    rig.release_all()  # crosses today's soft budget: warned
    rig.store.claim(job, "w1", LEASE_MS)
    rig.store.finish(job, "w1", JobStatus.FAILED, {"error_code": "ValidationException"})
    rig.tick(DAY_MS)
    assert rig.store.replay([job]) == [job]
    rig.release_all()  # crosses the next day's: warned again
    listed = str(any_redis.hget(keys.job_key(job), "webhook_deliveries")).split(",")
    assert [d for d in listed if "budget_warning:daily" in d] == [
        f"{job}:tenant.budget_warning:daily:2026-12-07",
        f"{job}:tenant.budget_warning:daily:2026-12-08",
    ]


# -- 12: smaller -----------------------------------------------------------------------------


def test_jobs_submitted_in_the_same_millisecond_go_in_submission_order(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=60, rate_limit_burst=1)
    spec = JobSpec.parse({"request": {"prompt": "p"}, "priority": "batch"})
    now = int(time.time() * 1000)
    ids = sorted((new_job_id(now) for _ in range(30)), reverse=True)  # not in ULID order
    rig.store.create([NewJob(i, MODEL, spec, now, "acme") for i in ids], dispatch=rig.dispatch)
    order = [str(m) for m in any_redis.zrange(keys.waiting_key(MODEL, "acme", "batch"), 0, -1)]
    released = [i for i in ids if rig.place(i) == "released"]
    assert released + order == ids


def test_a_claim_that_skips_a_job_says_how_many_attempts_it_had(any_redis: Any) -> None:
    rig = Rig(any_redis)
    [job] = rig.submit("acme")
    rig.release_all()
    assert rig.store.claim(job, "w", LEASE_MS).attempt == 1
    busy = rig.store.claim(job, "other", LEASE_MS)  # a redelivered message: the job is held
    assert (busy.state.value, busy.attempt) == ("busy", 1)
    rig.store.finish(job, "w", JobStatus.SUCCEEDED, {"s3_key": "k"})
    late = rig.store.claim(job, "other", LEASE_MS)
    assert (late.state.value, late.attempt) == ("terminal", 1)


def test_a_job_refused_on_arrival_cannot_be_replayed(any_redis: Any) -> None:
    rig = Rig(any_redis)
    assert rig.store.refuse(
        "bad1", model_id=MODEL, request={"prompt": ""}, error_code="InvalidRequest", problems="x"
    )
    assert rig.store.replay(["bad1"]) == []
    rig.release_all()
    record = rig.reads.get("bad1")
    assert (record.status, record.place) == (JobStatus.FAILED, "final")


def test_a_models_recent_waits_live_on_while_it_starts_jobs(any_redis: Any) -> None:
    rig = Rig(any_redis)
    first, second = rig.submit("acme", 2)
    rig.release_all()
    rig.store.claim(first, "w", LEASE_MS)
    waits = keys.recent_waits_key(MODEL)
    any_redis.pexpire(waits, 5_000)  # the list near the end of its life
    rig.store.claim(second, "w", LEASE_MS)
    assert any_redis.pttl(waits) > 6 * DAY_MS
    assert any_redis.llen(waits) == 2


def test_a_tenant_that_left_leaves_nothing_in_the_dispatcher(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.dispatch.set_tenant_limits("capped", max_concurrency=1)
    rig.submit("capped", 2)
    gone = rig.submit("gone", 3)
    rig.release_all()
    rig.submit("stays", 200)  # the virtual time moves on past the leavers' tags
    rig.release_all()
    for job in gone:
        rig.store.cancel(job)
    names = keys.dispatch_keys(MODEL)
    state = any_redis.hgetall(names.state)
    assert not [field for field in state if field.endswith("|gone")]
    assert any_redis.zscore(names.finish, "gone") is None
    assert any_redis.zscore(names.waiting, "gone") is None
