"""Finding a tenant's jobs through its indexes (words of the prompt, model, final status,
batch, date), paging through all of them, and the tenant's events channel the console follows:
on fakeredis and on a real Redis."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store import job_index, job_search
from imagegen.store.job_index import FiledJob, JobIndex
from imagegen.store.job_search import JobQuery, JobSearch
from imagegen.store.jobs import ClaimState
from imagegen.store.prompt_words import MAX_WORDS, words
from producer.client import Client

CORE = "stability.stable-image-core-v1:0"
ULTRA = "stability.stable-image-ultra-v1:1"


@pytest.fixture
def client(settings: Settings, any_redis: Any, monkeypatch: pytest.MonkeyPatch) -> Client:
    # Readers settle at most every millisecond here (a second in production).
    monkeypatch.setattr(job_index, "READ_SETTLE_EVERY_MS", 1)
    return Client(settings, redis_client=any_redis)


def search(client: Client) -> JobSearch:
    return JobSearch(client._redis, client.reads, client.submitter.index)


def found(client: Client, tenant: str, query: JobQuery, **kwargs: Any) -> list[str]:
    time.sleep(0.002)  # past the settle's once-a-millisecond
    return [r.job_id for r in search(client).find(tenant, query, **kwargs).jobs]


def finish(client: Client, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
    """End a job as a worker would (records only)."""
    record = client.get(job_id)
    client.dispatch.release(record.model_id)
    claim = client.jobs.claim(job_id, "worker-1", 60_000)
    assert claim.state is ClaimState.CLAIMED, claim
    fields: dict[str, Any] = {"error_code": "ModelErrorException", "error_message": "boom"}
    if status is JobStatus.SUCCEEDED:
        fields = {"s3_bucket": "b", "s3_key": f"images/{job_id}.png", "s3_uri": "s3://b/k"}
    client.jobs.finish(job_id, "worker-1", status, fields)


def test_the_words_of_a_prompt() -> None:
    assert words("A Lighthouse on the rocky COAST, at sunset; lighthouse!") == [
        "lighthouse",
        "rocky",
        "coast",
        "sunset",
    ]
    assert words("Café crème über Straße x 42 b2") == [
        "café",
        "crème",
        "über",
        "strasse",
        "42",
        "b2",
    ]
    assert words("snake_case and-dashes") == ["snake", "case", "dashes"]
    assert len(words(" ".join(f"w{i}" for i in range(100)))) == MAX_WORDS
    assert words("a" * 40 + " ok") == ["ok"]


def test_a_job_is_found_by_a_word_of_its_prompt(client: Client) -> None:
    lighthouse = client.submit("A lighthouse on a rocky coast at sunset", tenant="acme")
    client.submit("A red fox in the snow", tenant="acme")
    rival = client.submit("A lighthouse in fog", tenant="rival")
    assert found(client, "acme", JobQuery.of("LIGHTHOUSE")) == [lighthouse.job_id]
    assert found(client, "acme", JobQuery.of("rocky lighthouse")) == [lighthouse.job_id]
    assert found(client, "acme", JobQuery.of("lighthouse fox")) == []
    assert found(client, "rival", JobQuery.of("lighthouse")) == [rival.job_id]
    assert found(client, "nobody", JobQuery.of("lighthouse")) == []


def test_filters_by_status_model_batch_and_date(client: Client) -> None:
    done = client.submit("a cat on a mat", tenant="acme")
    failed = client.submit("a cat in a hat", tenant="acme")
    waiting = client.submit("a cat at sea", tenant="acme")
    ultra = client.submit("a cat in space", model_id=ULTRA, tenant="acme")
    finish(client, done.job_id)
    finish(client, failed.job_id, JobStatus.FAILED)
    finish(client, ultra.job_id)
    batch_id, batch = client.submit_batch(["a dog", "a dog and a cat"], tenant="acme")
    batch_ids = [r.job_id for r in batch]
    cat = JobQuery.of("cat")
    succeeded = found(client, "acme", JobQuery.of("cat", status=JobStatus.SUCCEEDED))
    assert succeeded == [ultra.job_id, done.job_id]
    assert found(client, "acme", JobQuery(status=JobStatus.FAILED)) == [failed.job_id]
    queued = found(client, "acme", JobQuery.of("cat", status=JobStatus.QUEUED))
    assert set(queued) == {waiting.job_id, batch_ids[1]}
    assert found(client, "acme", JobQuery(model_id=ULTRA)) == [ultra.job_id]
    in_batch = found(client, "acme", JobQuery(batch_id=batch_id))
    assert in_batch == batch_ids
    assert found(client, "acme", JobQuery.of("cat", batch_id=batch_id)) == [batch_ids[1]]
    assert found(client, "rival", JobQuery(batch_id=batch_id)) == []
    created = client.get(done.job_id).created_at
    now_ms = int(time.time() * 1000)
    assert len(found(client, "acme", JobQuery(from_ms=now_ms - 60_000))) == 6
    assert found(client, "acme", JobQuery(from_ms=now_ms + 60_000)) == []
    assert found(client, "acme", JobQuery(to_ms=int(created.timestamp() * 1000) - 1)) == []
    assert len(found(client, "acme", cat)) == 5


def test_paging_goes_through_every_job_kept(client: Client) -> None:
    ids = [client.submit(f"picture number {i} of a tree", tenant="acme").job_id for i in range(130)]
    for query in (JobQuery(), JobQuery.of("tree"), JobQuery(model_id=CORE)):
        pages, cursor = [], None
        while True:
            page = search(client).find("acme", query, cursor=cursor, limit=50)
            pages.append([r.job_id for r in page.jobs])
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [len(p) for p in pages] == [50, 50, 30]
        seen = [job_id for p in pages for job_id in p]
        assert sorted(seen) == sorted(ids)
        created = [client.get(job_id).created_at for job_id in seen]
        assert created == sorted(created, reverse=True)


def test_the_jobs_of_one_submission_are_listed_in_the_order_they_were_sent(
    client: Client,
) -> None:
    # One call files every job at the same millisecond: their ids order them, newest first.
    sent = [r.job_id for r in client.submit_many([f"frame {i}" for i in range(40)], tenant="acme")]
    assert found(client, "acme", JobQuery(), limit=100) == sent[::-1]


def test_a_rare_match_ends_a_page_early_and_goes_on(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_search, "MAX_EXAMINED", 40)
    wanted = client.submit("one blue whale", tenant="acme")
    for i in range(100):
        client.submit(f"a blue sky {i}", tenant="acme")
    query = JobQuery.of("blue whale")
    first = search(client).find("acme", query, limit=10)
    # "whale" is the smaller set and leads: found at once, nothing after it.
    assert [r.job_id for r in first.jobs] == [wanted.job_id]
    assert first.next_cursor is None
    first = search(client).find("acme", JobQuery(status=JobStatus.QUEUED), limit=500)
    assert first.cut_short
    assert first.examined == 40
    assert len(first.jobs) == 40
    rest = search(client).find(
        "acme", JobQuery(status=JobStatus.QUEUED), cursor=first.next_cursor, limit=500
    )
    assert len(rest.jobs) == 40


def test_final_statuses_are_filed_once_and_again_after_a_replay(client: Client) -> None:
    job = client.submit("a storm at sea", tenant="acme")
    redis = client._redis
    assert redis.zrange(keys.tenant_unsettled_key("acme"), 0, -1) == [job.job_id]
    finish(client, job.job_id, JobStatus.FAILED)
    assert found(client, "acme", JobQuery(status=JobStatus.FAILED)) == [job.job_id]
    assert redis.zcard(keys.tenant_unsettled_key("acme")) == 0
    assert client.replay([job.job_id]) == [job.job_id]
    # The index still says failed; the record says queued: the search checks and refiles it.
    assert found(client, "acme", JobQuery(status=JobStatus.FAILED)) == []
    assert redis.zcard(keys.tenant_status_jobs_key("acme", "failed")) == 0
    assert found(client, "acme", JobQuery(status=JobStatus.QUEUED)) == [job.job_id]
    finish(client, job.job_id)
    assert found(client, "acme", JobQuery(status=JobStatus.SUCCEEDED)) == [job.job_id]


def test_submissions_settle_so_unsettled_holds_little_more_than_the_open_jobs(
    client: Client,
) -> None:
    redis = client._redis
    jobs = [client.submit(f"a quiet lake {i}", tenant="acme").job_id for i in range(5)]
    for job_id in jobs[:4]:
        finish(client, job_id)
    redis.delete(keys.tenant_settling_key("acme", "write"))  # as 10 s later
    later = client.submit("a quiet lake again", tenant="acme").job_id
    assert set(redis.zrange(keys.tenant_unsettled_key("acme"), 0, -1)) == {jobs[4], later}
    assert redis.zcard(keys.tenant_status_jobs_key("acme", "succeeded")) == 4


def test_index_entries_leave_with_the_retention(client: Client) -> None:
    redis = client._redis
    index = JobIndex(redis, retention_s=3600)
    now_ms = int(time.time() * 1000)
    old = FiledJob("old-job", "acme", CORE, now_ms - 3_700_000, "an old harbour")
    index.file_new([old])
    word = keys.tenant_word_jobs_key("acme", "harbour")
    model = keys.tenant_model_jobs_key("acme", CORE)
    # A set is trimmed by one write in TRIM_EVERY, at random: within 200 writes, all but surely
    # ((7/8)^200 < 1e-11).
    for i in range(200):
        index.file_new([FiledJob(f"new-{i}", "acme", CORE, now_ms + i, "a new harbour")])
        if "old-job" not in redis.zrange(word, 0, 0) + redis.zrange(model, 0, 0):
            break
    assert redis.zscore(word, "old-job") is None
    assert redis.zscore(model, "old-job") is None
    assert redis.zcard(word) == i + 1
    assert 3_500 < redis.ttl(word) <= 3_600
    assert 3_500 < redis.ttl(keys.tenant_unsettled_key("acme")) <= 3_600


def test_the_tenants_channel_carries_small_events(client: Client) -> None:
    events = client.reads.subscribe_tenant("acme")
    try:
        job = client.submit("a secret prompt nobody else reads", tenant="acme")
        client.submit("another tenant's picture", tenant="rival")
        finish(client, job.job_id)
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            message = events.next(0.2)
            if message is not None:
                got.append(message["data"])
    finally:
        events.close()
    assert [json.loads(m) for m in got] == [
        {"job_id": job.job_id, "status": "queued", "place": "new"},
        {"job_id": job.job_id, "status": "running", "place": "running"},
        {"job_id": job.job_id, "status": "succeeded", "place": "final"},
    ]
    assert all("secret" not in m and len(m) < 120 for m in got)
