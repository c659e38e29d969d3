"""The lifecycle, checked after every step of random runs of every event (a hypothesis state
machine), on fakeredis and on a real Redis.

Forty tenants (past the 32 a release pass used to look at) submit jobs with and without
deadlines, identical fixed seeds (cache followers), inputs from other jobs (chains); budgets and
caps change under them; jobs are released, claimed, retried, finished, canceled, expired, put back
by the redrive and replayed; the clock jumps over days and past the retention. After every step:

- every job ever created still has a record, and is in exactly the sets its place says;
- the open sets are exactly the jobs not final; an open job has no TTL, a final one has one;
- each tenant queue with waiting jobs is ready or paused, the counts match the sets;
- with room for everything, a release leaves only tenants that truly cannot be served;
- what is reserved equals the reservations the jobs hold; spend never passes a hard budget;
- status only moves forward (a job given back is queued again, a replay reopens a failed one);
- every key the service wrote has a TTL or belongs to a family bounded by open jobs or trims;
- no script was asked for a move the lifecycle does not allow.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis as redis_lib
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
)

from imagegen.contract import JobSpec
from imagegen.lifecycle import PLACES, Place
from imagegen.records import JobStatus, NewJob
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore
from imagegen.store.maintenance import Maintenance
from imagegen.store.spend import Budget, Ledger, periods
from tests.conftest import TEST_REDIS_URL, require_service

MODEL = "stability.stable-image-core-v1:0"
PRICE_MICRO = 40_000
TENANTS = [f"t{i:02d}" for i in range(40)]
RETENTION_S = 4 * 86_400  # the shortest the webhook schedule allows; the clock jumps past it
LEASE_MS = 30_000
REDRIVE_GRACE_S = 60.0
DAY_MS = 86_400_000
QUEUED_PLACES = {p.value for p in PLACES if PLACES[p].status is JobStatus.QUEUED}
TERMINAL = {s.value for s in JobStatus if s.is_terminal}

# Key families the service writes, and how each is bounded: "ttl" (must carry one), "open" (a
# job's record while it is open, or what exists only while open jobs need it), "trimmed" (a set
# or hash trimmed by the service or bounded by the tenants, models or caps).
KEY_FAMILIES: list[tuple[str, str]] = [
    (r"imagegen:job:[^:]+", "job"),
    (r"imagegen:job:[^:]+:next", "open"),
    (r"imagegen:job:[^:]+:parked-image", "ttl"),
    (r"imagegen:jobs", "trimmed"),
    (r"imagegen:open", "trimmed"),
    (r"imagegen:running", "trimmed"),
    (r"imagegen:deadlines", "trimmed"),
    (r"imagegen:seq", "trimmed"),
    (r"imagegen:stats", "trimmed"),
    (r"imagegen:dlq", "trimmed"),
    (r"imagegen:events", "trimmed"),
    (r"imagegen:tenant:[^:]+", "trimmed"),
    (r"imagegen:tenant:[^:]+:(jobs|open|active)", "trimmed"),
    (r"imagegen:tenant:[^:]+:paused", "open"),
    (r"imagegen:tenant:[^:]+:bucket", "ttl"),
    (r"imagegen:batch:[^:]+(:jobs)?", "batch"),
    (r"imagegen:idem:.*", "ttl"),
    (r"imagegen:submit-refused:.*", "ttl"),
    (r"imagegen:limiter:.*", "ttl"),
    (r"imagegen:webhook:.*", "ttl"),
    (r"imagegen:webhooks:(due|dlq|disabled-urls)", "trimmed"),
    (r"imagegen:spend:[^:]+:[dm]:[0-9-]+", "ttl"),
    (r"imagegen:spend:[^:]+:days", "ttl"),
    (r"imagegen:spend:tenants", "trimmed"),
    (r"imagegen:cache:[^:]+:[0-9a-f]+", "ttl"),
    (r"imagegen:cache:[^:]+:[0-9a-f]+:(leader|followers)", "ttl"),
    (r"imagegen:dispatch:models", "trimmed"),
    (r"imagegen:dispatch:[^:]+:[^:]+:wait:[^:]+:(interactive|batch)", "open"),
    (r"imagegen:dispatch:[^:]+:[^:]+:since:(interactive|batch)", "open"),
    (r"imagegen:dispatch:[^:]+:[^:]+:waits", "ttl"),
    (
        r"imagegen:dispatch:[^:]+:[^:]+:(tenants|paused|waiting|weight|finish|state|delayed"
        r"|released|active)",
        "trimmed",
    ),
    (r"interactive|batch|webhooks", "trimmed"),
]


def _family(key: str) -> str | None:
    for pattern, family in KEY_FAMILIES:
        if re.fullmatch(pattern, key):
            return family
    return None


@dataclass(frozen=True)
class Snapshot:
    """The jobs as one step left them."""

    records: dict[str, dict[str, str]]
    ttls: dict[str, int]

    def place(self, job_id: str) -> str | None:
        return self.records.get(job_id, {}).get("place")

    def jobs_in(self, *places: str) -> list[str]:
        return sorted(j for j, record in self.records.items() if record.get("place") in places)


class Lifecycle(RuleBasedStateMachine):
    """One run: a fresh database, one clock, forty tenants."""

    make_redis: Any = None

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.redis = type(self).make_redis()
        self.redis.flushdb()
        self.now_ms = float(int(time.time() * 1000))
        Scripts.of(self.redis).clock = lambda: self.now_ms
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            rate_limit_rpm=600,
            rate_limit_burst=4,
            dispatch_lookahead_s=3600,
            job_retention_s=RETENTION_S,
            dispatch_redrive_grace_s=REDRIVE_GRACE_S,
            cache_ttl_s=RETENTION_S,
        )
        self.store = JobStore.from_settings(self.redis, self.settings)
        self.dispatch = Dispatch(self.redis, self.settings)
        # The same state, released with room for everything (no rate, no lookahead bound).
        self.ample = Dispatch(
            self.redis,
            self.settings.model_copy(update={"rate_limit_rpm": 0.0}),
        )
        self.ledger = Ledger(self.redis, self.settings)
        self.maintenance = Maintenance(self.redis, RETENTION_S, 30.0)
        self.created: dict[str, str | None] = {}  # job id -> tenant
        self.owners: dict[str, str] = {}  # running job -> its lease owner
        self.seen: dict[str, tuple[str, int, int]] = {}  # status, attempts, replays
        self.budget_floor: dict[tuple[str, str], int] = {}
        self.count = 0

    # -- helpers -------------------------------------------------------------------------------

    def job(self, job_id: str) -> dict[str, str]:
        return dict(self.redis.hgetall(keys.job_key(job_id)))

    def place(self, job_id: str) -> str | None:
        return self.redis.hget(keys.job_key(job_id), "place")

    def jobs_in(self, *places: str) -> list[str]:
        return sorted(j for j in self.created if self.place(j) in places)

    def snapshot(self) -> Snapshot:
        """Every job's record and TTL, read in one round trip (the checks after a step read
        them many times)."""
        pipe = self.redis.pipeline(transaction=False)
        ids = list(self.created)
        for job_id in ids:
            pipe.hgetall(keys.job_key(job_id))
            pipe.ttl(keys.job_key(job_id))
        replies = pipe.execute()
        records = {j: dict(replies[2 * i]) for i, j in enumerate(ids)}
        ttls = {j: int(replies[2 * i + 1]) for i, j in enumerate(ids)}
        return Snapshot(records, ttls)

    def new_id(self, tenant: str | None) -> str:
        self.count += 1
        return f"{tenant or 'none'}.j{self.count:04d}"

    # -- events ----------------------------------------------------------------------------------

    @rule(
        target=jobs,
        tenant=st.sampled_from([*TENANTS[:12], None]),
        n=st.integers(1, 3),
        batch=st.booleans(),
        seed=st.sampled_from([0, 0, 0, 7, 8]),
        deadline_ms=st.sampled_from([None, None, 500, 5_000, 60_000]),
        after=st.booleans(),
    )
    def submit(  # noqa: PLR0917 (hypothesis passes each drawn value by name)
        self,
        tenant: str | None,
        n: int,
        batch: bool,
        seed: int,
        deadline_ms: int | None,
        after: bool,
    ) -> Any:
        request: dict[str, Any] = {"prompt": "a lighthouse", "seed": seed}
        envelope: dict[str, Any] = {
            "request": request,
            "priority": "batch" if batch else "interactive",
        }
        spec = JobSpec.parse(envelope)
        if deadline_ms is not None:
            from datetime import UTC, datetime

            expires = datetime.fromtimestamp((self.now_ms + deadline_ms) / 1000, tz=UTC)
            spec = spec.model_copy(update={"expires_at": expires})
        parents = [j for j, t in self.created.items() if t == tenant]
        parent = parents[-1] if after and parents else None
        batch_id = uuid.uuid4().hex[:12] if batch else None
        jobs = [
            NewJob(
                self.new_id(tenant),
                MODEL,
                spec,
                int(self.now_ms),
                tenant=tenant,
                batch_id=batch_id,
                after_job_id=parent,
            )
            for _ in range(n)
        ]
        outcomes = self.store.create(jobs, dispatch=self.dispatch)
        for job, (outcome, _) in zip(jobs, outcomes, strict=True):
            assert outcome.value == "created"
            self.created[job.job_id] = tenant
        return jobs[0].job_id

    @rule()
    def release(self) -> None:
        self.dispatch.release(MODEL)

    @rule(job_id=jobs, owner=st.sampled_from(["w1", "w2"]))
    def claim(self, job_id: str, owner: str) -> None:
        claim = self.store.claim(job_id, owner, LEASE_MS)
        if claim.state.value == "claimed":
            self.owners[job_id] = owner

    @rule(job_id=jobs, stale=st.booleans())
    def mark_calling(self, job_id: str, stale: bool) -> None:
        owner = "someone-else" if stale else self.owners.get(job_id, "nobody")
        self.store.mark_calling(job_id, owner, calling=True)

    @rule(job_id=jobs, delay_s=st.sampled_from([0.0, 1.0, 30.0]), bought=st.booleans())
    def retry(self, job_id: str, delay_s: float, bought: bool) -> None:
        self.store.release_for_retry(
            job_id,
            self.owners.get(job_id, "nobody"),
            attempt=1,
            error_code="ServiceUnavailableException",
            message="try again",
            delay_s=delay_s,
            bought=bought,
        )

    @rule(
        job_id=jobs,
        status=st.sampled_from(
            [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.FILTERED]
        ),
        bought=st.booleans(),
    )
    def finish(self, job_id: str, status: JobStatus, bought: bool) -> None:
        fields: dict[str, str | int | None] = {}
        if status is JobStatus.SUCCEEDED:
            fields = {"s3_bucket": "b", "s3_key": f"images/{job_id}.png", "seed": 7, "sha256": "x"}
        self.store.finish(job_id, self.owners.get(job_id, "nobody"), status, fields, bought=bought)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        self.store.cancel(job_id)

    @rule()
    def expire_due(self) -> None:
        self.store.expire_due()

    @rule()
    def redrive(self) -> None:
        self.store.redrive_due()

    @rule(job_id=jobs)
    def replay(self, job_id: str) -> None:
        self.store.replay([job_id])

    @rule()
    def trim(self) -> None:
        self.maintenance.trim()

    @rule(
        tenant=st.sampled_from(TENANTS),
        daily=st.sampled_from([None, 0.0, 0.04, 0.12, 1.0]),
        monthly=st.sampled_from([None, 0.08, 2.0]),
        fail=st.booleans(),
    )
    def set_budget(
        self, tenant: str, daily: float | None, monthly: float | None, fail: bool
    ) -> None:
        day, month = periods(self.now_ms / 1000)
        for period in (day, month):
            held = self._ledger(tenant, period)
            key = (tenant, period)
            self.budget_floor[key] = max(self.budget_floor.get(key, 0), held[0] + held[1])
        self.ledger.set_budget(
            Budget(
                tenant,
                daily_hard=daily,
                monthly_hard=monthly,
                on_exceed="fail" if fail else "wait",
            )
        )

    @rule(
        tenant=st.sampled_from(TENANTS),
        rate_rpm=st.sampled_from([None, -1.0, 6.0, 60.0]),
        cap=st.sampled_from([None, -1, 1, 2]),
    )
    def set_caps(self, tenant: str, rate_rpm: float | None, cap: int | None) -> None:
        self.dispatch.set_tenant_limits(tenant, rate_rpm=rate_rpm, max_concurrency=cap)

    @rule(ms=st.sampled_from([10, 200, 1_500, 20_000, 70_000]))
    def tick(self, ms: int) -> None:
        self.now_ms += ms

    @rule(days=st.sampled_from([1, 8, 32]))
    def jump(self, days: int) -> None:
        """Over a UTC day (and past the retention, and a month) while jobs wait."""
        self.now_ms += days * DAY_MS

    @rule(
        tenants=st.lists(st.sampled_from(TENANTS), min_size=33, max_size=40, unique=True),
    )
    def many_tenants_cannot_pay(self, tenants: list[str]) -> None:
        """More than 32 tenants past their budget, each with a job waiting."""
        for tenant in tenants:
            self.ledger.set_budget(Budget(tenant, daily_hard=0.0))
            spec = JobSpec.parse({"request": {"prompt": "p"}})
            job = NewJob(self.new_id(tenant), MODEL, spec, int(self.now_ms), tenant=tenant)
            self.store.create([job], dispatch=self.dispatch)
            self.created[job.job_id] = tenant
            day, month = periods(self.now_ms / 1000)
            for period in (day, month):
                held = self._ledger(tenant, period)
                key = (tenant, period)
                self.budget_floor[key] = max(self.budget_floor.get(key, 0), held[0] + held[1])

    @rule()
    def release_with_room_for_everything(self) -> None:
        """With no rate limit and no lookahead bound, a release leaves only queues that cannot
        be served, whatever the other tenants' state: none starves behind them."""
        while self.ample.release(MODEL).released:
            pass
        waiting_by_tenant = Counter(
            self.created[j] or keys.NO_TENANT for j in self.jobs_in("waiting")
        )
        names = keys.dispatch_keys(MODEL)
        for tenant in waiting_by_tenant:
            reason = self.redis.hget(names.state, f"pause|{tenant}")
            assert reason, f"{tenant} has jobs waiting and room, and was not released"
            assert self._truly_unservable(tenant, reason), (tenant, reason)

    def _truly_unservable(self, tenant: str, reason: str) -> bool:
        record = self.redis.hgetall(keys.tenant_key(tenant))
        if reason == "concurrency":
            cap = int(record.get("max_concurrency") or 0)
            return cap > 0 and self.redis.zcard(f"imagegen:tenant:{tenant}:active") >= cap
        if reason == "rate":
            return float(record.get("rate_rpm") or 0) > 0
        if reason == "budget":
            day, month = periods(self.now_ms / 1000)
            for field, period in (("budget_daily_hard", day), ("budget_monthly_hard", month)):
                if record.get(field) is not None:
                    spent, reserved = self._ledger(tenant, period)
                    if spent + reserved + PRICE_MICRO > int(record[field]):
                        return True
            return False
        return False

    def _ledger(self, tenant: str, period: str) -> tuple[int, int]:
        spent, reserved = self.redis.hmget(keys.spend_key(tenant, period), ["spent", "reserved"])
        return int(spent or 0), int(reserved or 0)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def the_lifecycle_holds(self) -> None:
        """Every check below, after every step, on one snapshot of the jobs."""
        jobs = self.snapshot()
        self.no_illegal_moves()
        self.every_job_is_where_its_place_says(jobs)
        self.open_sets_are_the_jobs_not_final(jobs)
        self.tenant_queues_match_their_jobs(jobs)
        self.reserved_money_is_what_jobs_hold(jobs)
        self.spend_never_passes_a_hard_budget()
        self.status_only_moves_forward(jobs)
        self.everything_written_is_bounded()
        self.chains_and_followers_wait_only_for_open_jobs(jobs)

    def no_illegal_moves(self) -> None:
        stats = self.redis.hgetall(keys.STATS_KEY)
        assert not [k for k in stats if k.startswith(("illegal|", "stray|"))], stats

    def every_job_is_where_its_place_says(self, jobs: Snapshot) -> None:
        names = keys.dispatch_keys(MODEL)
        delayed = set(self.redis.zrange(names.delayed, 0, -1))
        released = set(self.redis.zrange(names.released, 0, -1))
        active = set(self.redis.zrange(names.active, 0, -1))
        running = set(self.redis.zrange(keys.RUNNING_KEY, 0, -1))
        waiting = self._waiting_sets()
        pipe = self.redis.pipeline(transaction=False)
        for job_id, tenant in self.created.items():
            pipe.zscore(f"imagegen:tenant:{tenant}:active", job_id)
        tenant_active = dict(zip(self.created, pipe.execute(), strict=True))
        for job_id, tenant in self.created.items():
            record = jobs.records[job_id]
            assert record, f"job {job_id} vanished"
            place, status = record.get("place"), record["status"]
            assert place in {p.value for p in Place if p is not Place.NEW}, (job_id, place)
            spec = PLACES[Place(place)]
            if spec.status is None:
                assert status in TERMINAL, (job_id, place, status)
            else:
                assert status == spec.status.value, (job_id, place, status)
            ttl = jobs.ttls[job_id]
            if place == "final":
                assert 0 < ttl <= RETENTION_S, (job_id, ttl)
            else:
                assert ttl == -1, f"open job {job_id} has a TTL ({ttl})"
            in_wait = waiting.get(job_id)
            if place == "waiting":
                priority = record.get("priority", "interactive")
                expected = keys.waiting_key(MODEL, tenant, priority)
                assert in_wait == expected, (job_id, in_wait, expected)
            else:
                assert in_wait is None, (job_id, place, in_wait)
            assert (job_id in delayed) == (place == "delayed"), (job_id, place)
            assert (job_id in released) == (place == "released"), (job_id, place)
            assert (job_id in running) == (place == "running"), (job_id, place)
            assert (job_id in active) == (place in ("released", "running")), (job_id, place)
            if tenant:
                is_active = tenant_active[job_id] is not None
                assert is_active == (place in ("released", "running")), (job_id, place)
            self._check_waiting_for_another_job(job_id, place, record)
        since = set()
        for priority in ("interactive", "batch"):
            since |= set(self.redis.zrange(keys.waiting_since_key(MODEL, priority), 0, -1))
        assert since == set(waiting), since ^ set(waiting)
        for name, members in (("delayed", delayed), ("released", released), ("running", running)):
            stray = members - set(self.created)
            assert not stray, f"{name} holds jobs that do not exist: {stray}"

    def _waiting_sets(self) -> dict[str, str]:
        """Each waiting job's waiting set; a job in two fails."""
        sets = list(self.redis.scan_iter(match=f"{keys.DISPATCH_PREFIX}{MODEL}:wait:*", count=1000))
        pipe = self.redis.pipeline(transaction=False)
        for key in sets:
            pipe.zrange(key, 0, -1)
        waiting: dict[str, str] = {}
        for key, members in zip(sets, pipe.execute(), strict=True):
            for member in members:
                assert member not in waiting, f"{member} in two waiting sets"
                waiting[member] = key
        return waiting

    def _check_waiting_for_another_job(
        self, job_id: str, place: str, record: dict[str, str]
    ) -> None:
        """An ``after`` job is on its (open) input job's list; a follower on its (released or
        running) leader's."""
        if place == "after":
            parent_next = self.redis.lrange(keys.job_key(record["after_job"]) + ":next", 0, -1)
            assert parent_next.count(job_id) == 1, (job_id, parent_next)
            assert self.redis.hget(keys.job_key(record["after_job"]), "place") != "final"
        if place == "following":
            entry = record["cache_entry"]
            followers = self.redis.lrange(f"{entry}:followers", 0, -1)
            assert followers.count(job_id) == 1, (job_id, followers)
            leader = self.redis.get(f"{entry}:leader")
            assert leader, job_id
            assert self.place(leader) in ("released", "running"), (job_id, leader)

    def open_sets_are_the_jobs_not_final(self, jobs: Snapshot) -> None:
        open_jobs = {j for j in self.created if jobs.place(j) != "final"}
        assert set(self.redis.zrange(keys.OPEN_KEY, 0, -1)) == open_jobs
        for tenant in {t for t in self.created.values() if t}:
            own = {j for j in open_jobs if self.created[j] == tenant}
            assert set(self.redis.zrange(keys.tenant_open_key(tenant), 0, -1)) == own

    def tenant_queues_match_their_jobs(self, jobs: Snapshot) -> None:
        names = keys.dispatch_keys(MODEL)
        actual = Counter(self.created[j] or keys.NO_TENANT for j in jobs.jobs_in("waiting"))
        counts = {t: int(n) for t, n in self.redis.zrange(names.waiting, 0, -1, withscores=True)}
        assert counts == dict(actual)
        ready = set(self.redis.zrange(names.tenants, 0, -1))
        paused = set(self.redis.zrange(names.paused, 0, -1))
        assert not ready & paused
        assert ready | paused == set(actual), (ready, paused, actual)
        state = self.redis.hgetall(names.state)
        assert int(state.get("jobs", 0)) == sum(actual.values())
        weights = {t: float(w) for t, w in self.redis.hgetall(names.weight).items()}
        assert set(weights) == ready
        assert float(state.get("weight_sum", 0)) == pytest.approx(sum(weights.values()), abs=1e-6)
        reasons = Counter(state.get(f"pause|{tenant}") for tenant in paused)
        counted = {r: int(state.get(f"paused|{r}") or 0) for r in ("budget", "concurrency", "rate")}
        assert {r: n for r, n in counted.items() if n} == dict(reasons)
        for tenant in paused:
            assert state.get(f"pause|{tenant}") in ("budget", "concurrency", "rate")
            index = self.redis.hget(f"imagegen:tenant:{tenant}:paused", MODEL)
            assert index == state.get(f"pause|{tenant}") or tenant == keys.NO_TENANT

    def reserved_money_is_what_jobs_hold(self, jobs: Snapshot) -> None:
        held: dict[tuple[str, str], int] = defaultdict(int)
        for job_id in self.created:
            record = jobs.records[job_id]
            amount = int(record.get("reserved_micro") or 0)
            if amount:
                assert record["place"] != "final", f"{job_id} is final and still holds money"
                tenant = record.get("tenant") or keys.NO_TENANT
                held[(tenant, record["reserved_day"])] += amount
                held[(tenant, record["reserved_month"])] += amount
        ledgers = [
            (key, match)
            for key in self.redis.scan_iter(match=f"{keys.SPEND_PREFIX}*", count=1000)
            if (match := re.fullmatch(rf"{keys.SPEND_PREFIX}([^:]+):([dm]:[0-9-]+)", key))
        ]
        pipe = self.redis.pipeline(transaction=False)
        for key, _ in ledgers:
            pipe.hget(key, "reserved")
        for (key, match), reserved in zip(ledgers, pipe.execute(), strict=True):
            amount = int(reserved or 0)
            assert amount == held.get((match[1], match[2]), 0), (key, amount)

    def spend_never_passes_a_hard_budget(self) -> None:
        for tenant in TENANTS:
            record = self.redis.hgetall(keys.tenant_key(tenant))
            day, month = periods(self.now_ms / 1000)
            for field, period in (("budget_daily_hard", day), ("budget_monthly_hard", month)):
                if record.get(field) is None:
                    continue
                spent, reserved = self._ledger(tenant, period)
                allowed = max(int(record[field]), self.budget_floor.get((tenant, period), 0))
                assert spent + reserved <= allowed, (tenant, period, spent, reserved, allowed)

    def status_only_moves_forward(self, jobs: Snapshot) -> None:
        for job_id in self.created:
            record = jobs.records[job_id]
            now = (
                record["status"],
                int(record.get("attempts") or 0),
                int(record.get("replays") or 0),
            )
            before = self.seen.get(job_id)
            self.seen[job_id] = now
            if before is None:
                continue
            (was, attempts_was, replays_was), (status, attempts, replays) = before, now
            if replays > replays_was:
                continue  # a replay reopened a failed job
            assert replays == replays_was
            assert attempts >= attempts_was, (job_id, before, now)
            if was in TERMINAL:
                assert status == was, f"{job_id}: {was} -> {status}"
            elif was == "running" and status == "queued":
                pass  # given back: a retry or the redrive
            elif was == "queued" and status == "running":
                assert attempts == attempts_was + 1, (job_id, before, now)

    def everything_written_is_bounded(self) -> None:
        written = list(self.redis.scan_iter(match="*", count=1000))
        pipe = self.redis.pipeline(transaction=False)
        for key in written:
            pipe.ttl(key)
        for key, ttl in zip(written, pipe.execute(), strict=True):
            family = _family(key)
            assert family is not None, f"{key} is not a known key family"
            if family == "ttl":
                assert ttl > 0, f"{key} has no TTL"
            elif family == "job":
                pass  # checked with its place
            elif family == "open":
                assert ttl == -1 or ttl > 0
            elif family == "batch":
                batch = self.redis.hgetall(key.removesuffix(":jobs"))
                if int(batch.get("open") or 0) <= 0:
                    assert ttl > 0, f"{key}: no job of it is open, and it has no TTL"

    def chains_and_followers_wait_only_for_open_jobs(self, jobs: Snapshot) -> None:
        for key in self.redis.scan_iter(match="imagegen:job:*:next", count=1000):
            parent = key.removeprefix(keys.JOB_KEY_PREFIX).removesuffix(":next")
            place = jobs.place(parent) if parent in jobs.records else self.place(parent)
            assert place not in (None, "final"), f"{key} outlived its job"


def _machine(make_redis: Any) -> type[Lifecycle]:
    return type("Machine", (Lifecycle,), {"make_redis": staticmethod(make_redis)})


MODEL_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# A run takes under a minute; the room is for a loaded machine (a timeout mid-run would be
# replayed by hypothesis and reported as a flaky failure, not as the timeout it was).
@pytest.mark.timeout(300)
def test_the_lifecycle_on_fakeredis() -> None:
    machine = _machine(lambda: fakeredis.FakeRedis(decode_responses=True))
    machine.TestCase.settings = MODEL_SETTINGS
    machine.TestCase().runTest()


@pytest.mark.timeout(300)
def test_the_lifecycle_on_a_real_redis() -> None:
    client = redis_lib.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis_lib.RedisError as e:
        require_service(f"Redis at {TEST_REDIS_URL} does not answer ({e})")
    machine = _machine(lambda: client)
    machine.TestCase.settings = MODEL_SETTINGS
    try:
        machine.TestCase().runTest()
    finally:
        client.flushdb()
        client.close()
