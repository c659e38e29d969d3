"""The dispatcher (``dispatch_release.lua`` and its store), on fakeredis (with Lua) and on a real
Redis: same tests, both servers. Tests that pass their own clock (``now_ms``) release exactly
what the bucket holds at that instant."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from imagegen.contract import JobSpec
from imagegen.records import JobStatus, NewJob
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.context import JobContext
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import Caps, ClaimState, CreateOutcome, JobStore
from tests.support import ScriptClock

QUEUES = ("interactive", "batch")
RETENTION_S = 3600
LEASE_MS = 60_000
RPM = 600.0  # ten a second: a token every 100 ms
T0 = 1_000_000.0


def make_settings(**values: Any) -> Settings:
    # No lookahead bound unless a test sets one: these tests never claim what they release.
    base: dict[str, Any] = {
        "rate_limit_rpm": RPM,
        "rate_limit_burst": 3,
        "dispatch_lookahead_s": 3600,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


def model() -> str:
    """A fresh model id, so every test (and every hypothesis example) has its own state."""
    return f"test-model-{uuid.uuid4().hex[:8]}"


class Rig:
    def __init__(self, redis: Any, **settings: Any) -> None:
        self.redis = redis
        self.settings = make_settings(**settings)
        self.store = JobStore(
            redis,
            RETENTION_S,
            redrive_grace_s=0.0,
            context=JobContext.from_settings(self.settings),
        )
        self.dispatch = Dispatch(redis, self.settings)
        self.model = model()
        self.count = 0
        self.clock = T0

    def submit(
        self,
        tenant: str | None,
        n: int = 1,
        *,
        priority: str = "interactive",
        expires_ms: int | None = None,
        created_ms: int | None = None,
    ) -> list[str]:
        fields: dict[str, Any] = {"request": {"prompt": "p"}, "priority": priority}
        spec = JobSpec.parse(fields)
        if expires_ms is not None:
            spec = spec.model_copy(update={"expires_at": _at(expires_ms)})
        jobs = []
        for _ in range(n):
            self.count += 1
            job_id = f"{tenant or 'none'}-{priority[0]}-{self.count:05d}-{self.model[-8:]}"
            made = created_ms if created_ms is not None else int(time.time() * 1000)
            jobs.append(NewJob(job_id, self.model, spec, made, tenant=tenant))
        outcomes = self.store.create(jobs)
        assert {outcome for outcome, _ in outcomes} == {CreateOutcome.CREATED}
        return [job.job_id for job in jobs]

    def release(self, now_ms: float | None = None) -> list[str]:
        """Release what is due and return the job ids released, in order."""
        before = {queue: self.redis.llen(queue) for queue in QUEUES}
        self.dispatch.release(self.model, now_ms=now_ms)
        released = []
        for queue in QUEUES:
            # LPUSH: the new messages are at the head of each list.
            added = self.redis.llen(queue) - before[queue]
            if added:
                released += [json.loads(raw) for raw in self.redis.lrange(queue, 0, added - 1)]
        released.sort(key=_release_order)
        return [message["headers"]["id"] for message in released]

    def release_one_by_one(self, n: int) -> list[str]:
        """The next n jobs released, the clock moving a token's worth at a time (the first run
        also releases the bucket's burst, in the same fair order)."""
        released: list[str] = []
        for _ in range(10 * n):
            self.clock += 100
            released += self.release(now_ms=self.clock)
            if len(released) >= n:
                break
        return released[:n]


def _release_order(message: dict[str, Any]) -> tuple[int, int]:
    tag = message["properties"]["delivery_tag"]
    stamp, index = tag.rsplit(".", 2)[-2:]
    return int(stamp), int(index)


def _at(ms: int) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def tenants_of(job_ids: list[str]) -> list[str]:
    return [job_id.split("-", 1)[0] for job_id in job_ids]


# -- the rate ---------------------------------------------------------------------------------


def test_the_burst_goes_at_once_then_one_job_per_token(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.submit("acme", 6)
    assert len(rig.release(now_ms=T0)) == 3  # the burst
    assert rig.release(now_ms=T0) == []
    assert len(rig.release(now_ms=T0 + 100)) == 1  # a token every 100 ms
    assert len(rig.release(now_ms=T0 + 150)) == 0
    assert len(rig.release(now_ms=T0 + 300)) == 2


def test_release_runs_whose_clocks_arrive_out_of_order_stay_within_the_rate(
    any_redis: Any,
) -> None:
    # Several workers run the release: their runs reach Redis a little out of clock order. On a
    # real clock (ms since 1970: 13 digits before the point) the bucket once kept its time to
    # 0.1 ms: a run at .04 stored .0, and the next run, at .02, counted .02 ms again.
    rig = Rig(any_redis, rate_limit_rpm=60_000, rate_limit_burst=2)  # a token every ms
    rig.submit("acme", 400)
    start = 1_800_000_000_000.0
    released = sum(
        rig.dispatch.release(rig.model, now_ms=start + ms + late).released
        for ms in range(300)
        for late in (0.04, 0.02)
    )
    assert released <= 2 + 299.04 + 1  # the burst, then a token a ms (and one run's rounding)


def test_a_release_says_when_the_next_token_is_due(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_burst=1)
    rig.submit("acme", 3)
    first = rig.dispatch.release(rig.model, now_ms=T0)
    assert first.released == 2  # two tokens at least, so a late release run loses none
    assert first.next_s == pytest.approx(0.1)
    assert rig.dispatch.release(rig.model, now_ms=T0 + 100).released == 1
    assert rig.dispatch.release(rig.model, now_ms=T0 + 100).next_s is None  # nothing waits


def test_without_a_rate_limit_only_the_lookahead_bounds_a_release(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0)
    rig.submit("acme", 100)
    released = rig.dispatch.release(rig.model)
    assert released.released == rig.dispatch.lookahead(rig.model)
    assert released.next_s == float("inf")  # only a claim makes room


def test_without_a_rate_limit_jobs_are_released_in_batches_as_they_are_claimed(
    any_redis: Any,
) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0)
    rig.submit("acme", 200)
    lookahead = rig.dispatch.lookahead(rig.model)
    batch = lookahead // 4
    assert len(rig.release()) == lookahead
    released_key = keys.dispatch_keys(rig.model).released
    for claimed in range(1, batch + 1):
        [first] = any_redis.zrange(released_key, 0, 0)
        assert rig.store.claim(first, "w", LEASE_MS).state is ClaimState.CLAIMED
        again = rig.dispatch.release(rig.model)
        if claimed < batch:
            # Plenty still released for the workers: nothing goes, and only a claim makes room.
            assert (again.released, again.next_s) == (0, float("inf"))
        else:
            # A quarter of the lookahead is free: one run releases it all.
            assert again.released == batch
    assert any_redis.zcard(released_key) == lookahead


def test_released_jobs_stay_within_a_few_seconds_of_the_rate(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=600, dispatch_lookahead_s=0.5)
    rig.submit("acme", 20)
    assert rig.dispatch.lookahead(rig.model) == 5
    assert len(rig.release(now_ms=T0 + 60_000)) == 3  # the burst
    assert len(rig.release(now_ms=T0 + 60_500)) == 2  # the lookahead is full: 5 unclaimed
    assert rig.release(now_ms=T0 + 61_000) == []
    first = any_redis.zrange(keys.dispatch_keys(rig.model).released, 0, 0)[0]
    assert rig.store.claim(first, "w", LEASE_MS).state is ClaimState.CLAIMED
    assert len(rig.release(now_ms=T0 + 61_000)) == 1


def test_the_models_concurrency_cap_counts_released_and_running_jobs(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0, max_concurrency=2)
    [a, b, c] = rig.submit("acme", 3)
    assert rig.release() == [a, b]
    rig.store.claim(a, "w", LEASE_MS)
    assert rig.release() == []  # a runs, b is released: two in flight
    rig.store.finish(a, "w", JobStatus.SUCCEEDED, {})
    assert rig.release() == [c]


# -- fair share -------------------------------------------------------------------------------


def test_a_flood_does_not_delay_the_other_tenants(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.submit("a", 200)
    rig.submit("b", 5)
    rig.submit("c", 5)
    first = tenants_of(rig.release_one_by_one(15))
    assert Counter(first) == {"a": 5, "b": 5, "c": 5}


def test_weights_set_each_tenants_share(any_redis: Any) -> None:
    rig = Rig(any_redis, tenant_weights={"a": 2})
    rig.dispatch.set_tenant_limits("c", weight=3)  # the tenant's record wins over settings
    for tenant in "abc":
        rig.submit(tenant, 60)
    first = Counter(tenants_of(rig.release_one_by_one(60)))
    assert first == {"a": 20, "b": 10, "c": 30}


def test_an_idle_tenant_banks_no_credit(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.submit("a", 100)
    rig.release_one_by_one(50)  # a alone used the whole rate
    rig.submit("b", 20)
    following = Counter(tenants_of(rig.release_one_by_one(20)))
    assert following == {"a": 10, "b": 10}  # b shares from now on; it does not catch up


def test_interactive_goes_first_within_a_tenant_but_batch_is_not_starved(any_redis: Any) -> None:
    rig = Rig(any_redis, dispatch_batch_every=4)
    batch = rig.submit("a", 3, priority="batch")
    interactive = rig.submit("a", 10, priority="interactive")
    order = rig.release_one_by_one(13)
    assert order[:4] == interactive[:4]
    assert order[4] == batch[0]  # after four interactive jobs in a row, one batch job
    assert order[5:9] == interactive[4:8]
    assert order[9] == batch[1]
    assert order[10:] == [*interactive[8:], batch[2]]


def test_earliest_deadline_first_then_first_submitted(any_redis: Any) -> None:
    rig = Rig(any_redis)
    now = int(time.time() * 1000)
    [plain_1] = rig.submit("a", created_ms=now - 5000)
    [late] = rig.submit("a", expires_ms=now + 600_000)
    [plain_2] = rig.submit("a", created_ms=now - 1000)
    [soon] = rig.submit("a", expires_ms=now + 60_000)
    assert rig.release_one_by_one(4) == [soon, late, plain_1, plain_2]


def test_a_tenant_rate_cap_passes_the_tenant_over(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=6000)
    rig.dispatch.set_tenant_limits("a", rate_rpm=60)  # one a second
    rig.submit("a", 10)
    rig.submit("b", 10)
    released = Counter(tenants_of(rig.release(now_ms=T0)))
    released += Counter(tenants_of(rig.release(now_ms=T0 + 500)))
    assert released["a"] == 1
    assert released["b"] >= 3


def test_a_tenant_concurrency_cap_counts_its_released_and_running_jobs(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0, tenant_max_concurrency=2)
    rig.submit("a", 5)
    rig.submit("b", 5)
    released = tenants_of(rig.release())
    assert Counter(released) == {"a": 2, "b": 2}
    # Both queues left the scan until one of their jobs ends: nothing to poll for.
    assert rig.dispatch.paused(rig.model) == {"a": "concurrency", "b": "concurrency"}
    assert rig.dispatch.release(rig.model).next_s is None


# -- one mechanism for everything later ---------------------------------------------------


def test_a_stale_message_cannot_run_a_waiting_job(any_redis: Any) -> None:
    rig = Rig(any_redis)
    [job] = rig.submit("a")
    assert rig.store.claim(job, "w", LEASE_MS).state is ClaimState.WAITING
    assert rig.release(now_ms=T0) == [job]
    claim = rig.store.claim(job, "w", LEASE_MS)
    assert claim.state is ClaimState.CLAIMED
    assert claim.queue_wait_ms is not None


def test_a_retry_waits_for_its_due_time_then_for_its_turn(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0)
    clock = ScriptClock(any_redis)
    [job] = rig.submit("a")
    rig.release()
    rig.store.claim(job, "w", LEASE_MS)
    rig.store.release_for_retry(
        job, "w", attempt=1, error_code="ThrottlingException", message="slow", delay_s=0.3
    )
    assert rig.release() == []
    assert rig.store.claim(job, "w2", LEASE_MS).state is ClaimState.WAITING
    clock.tick(100)
    release = rig.dispatch.release(rig.model)
    assert release.next_s == pytest.approx(0.2)
    clock.tick(200)
    assert rig.release() == [job]
    assert rig.store.claim(job, "w2", LEASE_MS).attempt == 2


def test_canceling_a_waiting_job_takes_it_out_without_a_token(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_burst=1)
    [first, second, third] = rig.submit("a", 3)
    rig.store.cancel(first)
    assert JobReads(any_redis).get(first).status is JobStatus.CANCELED
    assert rig.release(now_ms=T0) == [second, third]


def test_a_waiting_job_past_its_deadline_ends_expired_without_a_call(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_burst=1)
    now = int(time.time() * 1000)
    [late] = rig.submit("a", expires_ms=now + 50)
    [other] = rig.submit("a")
    time.sleep(0.1)
    assert rig.release() == [other]
    assert JobReads(any_redis).get(late).status is JobStatus.EXPIRED


def test_a_released_job_nobody_claimed_waits_again(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0)
    [job] = rig.submit("a")
    rig.release()  # its message went with a worker that died before claiming it
    time.sleep(0.01)
    assert rig.store.redrive_due() == [job]
    assert rig.store.claim(job, "late message", LEASE_MS).state is ClaimState.WAITING
    assert len(rig.release()) == 1
    assert rig.store.claim(job, "w", LEASE_MS).state is ClaimState.CLAIMED


def test_a_running_job_whose_lease_ran_out_waits_again(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0)
    [job] = rig.submit("a")
    rig.release()
    rig.store.claim(job, "dead worker", 1)
    time.sleep(0.01)
    assert rig.store.redrive_due() == [job]
    assert rig.release() == [job]
    assert rig.store.claim(job, "w", LEASE_MS).attempt == 2


def test_the_caps_count_every_job_not_yet_finished(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=0)
    caps = Caps(total=3, per_tenant=3)
    [running, released, _waiting] = rig.submit("a", 3)
    rig.dispatch.release(rig.model)
    rig.store.claim(running, "w", LEASE_MS)
    spec = JobSpec.parse({"request": {"prompt": "p"}})
    more = rig.store.create([NewJob("more", rig.model, spec, 1, tenant="a")], caps=caps)
    assert more[0][0] is CreateOutcome.FULL
    assert JobReads(any_redis).open_counts("a") == (3, 3)
    rig.store.finish(running, "w", JobStatus.SUCCEEDED, {})
    assert (
        rig.store.create([NewJob("more", rig.model, spec, 1, tenant="a")], caps=caps)[0][0]
        is CreateOutcome.CREATED
    )
    del released


# -- position and estimate ----------------------------------------------------------------


def test_position_counts_what_fair_share_releases_first(any_redis: Any) -> None:
    rig = Rig(any_redis, rate_limit_rpm=60, rate_limit_burst=1)
    a_jobs = rig.submit("a", 10)
    [b_job] = rig.submit("b")
    b = rig.dispatch.position(b_job, rig.model)
    assert b is not None
    assert b.position == 2  # one of a's jobs may go first, then b's
    assert b.share == pytest.approx(0.5)
    last_a = rig.dispatch.position(a_jobs[-1], rig.model)
    assert last_a is not None
    assert last_a.position == 11  # a's nine before it and b's one
    assert last_a.start_in_s == pytest.approx(11 - 2, abs=1.0)  # a job a second, 2 tokens now
    [new] = rig.dispatch.estimates(rig.model, "c", "interactive", [(None, 0)])
    assert new.position == 3  # a and b each get one first
    rig.release(now_ms=None)
    assert rig.dispatch.position(b_job, rig.model) is None  # released


# -- the property -----------------------------------------------------------------------------


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    burst=st.integers(min_value=1, max_value=4),
    arrivals=st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(min_value=1, max_value=30)),
        min_size=1,
        max_size=8,
    ),
    gaps_ms=st.lists(st.floats(min_value=0, max_value=400), min_size=1, max_size=50),
)
def test_no_release_exceeds_the_bucket_and_every_tenant_is_served_in_turn(
    any_redis: Any, burst: int, arrivals: list[tuple[str, int]], gaps_ms: list[float]
) -> None:
    rig = Rig(any_redis, rate_limit_burst=burst, dispatch_lookahead_s=3600)
    for tenant, n in arrivals:
        rig.submit(tenant, n)
    now, releases = T0, []
    for gap in gaps_ms:
        now += gap
        for job_id in rig.release(now_ms=now):
            releases.append((now, job_id.split("-", 1)[0]))
    # The bucket: never more than the rate over any window plus what it may hold.
    per_ms, held = RPM / 60_000, max(burst, 2)
    times = [at for at, _ in releases]
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= per_ms * (times[j] - times[i]) + held + 1e-6
    # Fair share: while a tenant still has jobs waiting, no other tenant gets more than two
    # releases between two of its own (equal weights).
    remaining = Counter(tenant for tenant, _ in ((t, 0) for t, n in arrivals for _ in range(n)))
    since: dict[str, Counter[str]] = {t: Counter() for t in remaining}
    for _, tenant in releases:
        remaining[tenant] -= 1
        since[tenant] = Counter()
        for other, others_releases in since.items():
            if other != tenant and remaining[other] > 0:
                others_releases[tenant] += 1
                assert others_releases[tenant] <= 2


def test_per_tenant_figures_go_to_the_busiest_tenants_waiting_first() -> None:
    from collections import Counter

    from imagegen.store.dispatch import _busiest

    waiting = {"a": 3, "b": 2, "c": 2, "d": 1}
    recent = Counter({"c": 5, "e": 9, "b": 1})
    assert _busiest(waiting, recent, 2) == ["a", "c"]  # b and c tie on waiting: c released more
    assert _busiest(waiting, recent, 4) == ["a", "b", "c", "d"]  # e waits for nothing
    assert _busiest(waiting, recent, 5) == ["a", "b", "c", "d", "e"]
    assert _busiest(waiting, recent, 10) == ["a", "b", "c", "d", "e"]
    assert _busiest(waiting, recent, None) == ["a", "b", "c", "d", "e"]
    assert _busiest({}, recent, 2) == ["c", "e"]
