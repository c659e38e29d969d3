"""The HTTP API's rules, in process (FastAPI's test client, fakeredis, no worker)."""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imagegen.redis import keys
from imagegen.settings import Settings, get_settings
from producer.api import app_from_env, create_app
from producer.client import Client

JOB = {"request": {"prompt": "a lighthouse", "aspect_ratio": "16:9"}}


@dataclass
class Api:
    http: TestClient
    client: Client
    redis: Any

    def key(self, tenant: str) -> dict[str, str]:
        _, key = self.client.api_keys.create(tenant)
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    settings = settings.model_copy(
        update={
            "max_queued_per_tenant": 5,
            "api_max_body_bytes": 20_000,
            "rate_limit_rpm": 60,
            "api_auth_failures_per_minute": 3,
            "max_batch_size": 50,
        }
    )
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield Api(http, Client(settings, redis_client=redis), redis)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_submit_answers_202_with_the_job_and_where_it_lives(api: Api) -> None:
    response = api.http.post("/v1/jobs", json=JOB, headers=api.key("acme"))
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued"
    assert job["tenant"] == "acme"
    assert response.headers["location"] == job["url"] == f"/v1/jobs/{job['job_id']}"
    assert api.http.get(job["url"], headers=api.key("acme")).json()["job_id"] == job["job_id"]


def test_after_redis_lost_data_a_missing_job_may_have_been_lost(api: Api) -> None:
    acme = api.key("acme")
    assert problem(api.http.get("/v1/jobs/order-9", headers=acme), 404)["detail"] == (
        "no job order-9"
    )
    lost_at_ms = int(time.time() * 1000) - 60_000
    api.redis.hset(
        keys.REDIS_EPOCH_KEY,
        mapping={"epoch": "e2", "lost_kind": "emptied", "lost_at_ms": lost_at_ms},
    )
    at = datetime.fromtimestamp(lost_at_ms / 1000, UTC).isoformat(timespec="seconds")
    assert problem(api.http.get("/v1/jobs/order-9", headers=acme), 404)["detail"] == (
        f"no job order-9; Redis lost data at {at} (emptied): a job accepted before then may be "
        "gone, submit it again"
    )
    # Long after the loss (past the job retention), a missing job is only missing.
    api.redis.hset(keys.REDIS_EPOCH_KEY, "lost_at_ms", lost_at_ms - 30 * 86_400_000)
    assert problem(api.http.get("/v1/jobs/order-9", headers=acme), 404)["detail"] == (
        "no job order-9"
    )


def test_bad_jobs_are_problems_naming_each_field(api: Api) -> None:
    body = {"request": {"prompt": "", "aspect_ratio": "4:3", "colour": "red"}, "priority": "x"}
    found = problem(api.http.post("/v1/jobs", json=body, headers=api.key("acme")), 422)
    assert {e["field"] for e in found["errors"]} == {
        "request.prompt",
        "request.aspect_ratio",
        "request.colour",
        "priority",
    }
    assert api.redis.llen("interactive") == 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"a string"'])
def test_a_body_that_is_not_a_job_object_is_a_400(api: Api, body: bytes) -> None:
    problem(api.http.post("/v1/jobs", content=body, headers=api.key("acme")), 400)


def test_an_oversized_body_is_a_413(api: Api) -> None:
    big = {"request": {"prompt": "x" * 9_000}, "metadata": {"pad": "y" * 15_000}}
    problem(api.http.post("/v1/jobs", json=big, headers=api.key("acme")), 413)


def test_missing_and_unknown_keys_are_401(api: Api) -> None:
    problem(api.http.get("/v1/jobs"), 401)
    problem(api.http.get("/v1/jobs", headers={"Authorization": "Bearer igk_nope_nope"}), 401)
    problem(api.http.get("/v1/jobs", headers={"Authorization": "Basic abc"}), 401)


def test_repeated_bad_keys_are_slowed_down(api: Api) -> None:
    for _ in range(3):
        problem(api.http.get("/v1/jobs", headers={"Authorization": "Bearer bad"}), 401)
    found = problem(api.http.get("/v1/jobs", headers={"Authorization": "Bearer bad"}), 429)
    assert "bad API keys" in found["detail"]
    # A valid key is never refused, even from the client that keeps sending bad ones (everyone
    # behind one proxy shares its address).
    assert api.http.get("/v1/jobs", headers=api.key("acme")).status_code == 200


def test_a_spoofed_forwarded_for_changes_nothing(api: Api) -> None:
    for hop in range(3):
        spoofed = {"Authorization": "Bearer bad", "X-Forwarded-For": f"203.0.113.{hop}"}
        problem(api.http.get("/v1/jobs", headers=spoofed), 401)
    spoofed = {"Authorization": "Bearer bad", "X-Forwarded-For": "203.0.113.99"}
    problem(api.http.get("/v1/jobs", headers=spoofed), 429)


def test_the_real_client_is_found_behind_trusted_proxies_only() -> None:
    from types import SimpleNamespace

    from producer.api.auth import client_address

    def request(peer: str, forwarded: str) -> Any:
        return SimpleNamespace(
            client=SimpleNamespace(host=peer), headers={"x-forwarded-for": forwarded}
        )

    trusted = ("10.0.0.0/8",)
    assert client_address(request("10.1.2.3", "198.51.100.7, 10.9.9.9"), trusted) == (
        "198.51.100.7"
    )
    # The client may prepend anything; only what the trusted proxy appended counts.
    assert client_address(request("10.1.2.3", "1.2.3.4, 198.51.100.7"), trusted) == ("198.51.100.7")
    assert client_address(request("198.51.100.8", "1.2.3.4"), trusted) == "198.51.100.8"
    assert client_address(request("10.1.2.3", "1.2.3.4"), ()) == "10.1.2.3"


def test_bad_key_counts_are_exact_under_concurrency(real_redis: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from imagegen.store.tenants import AuthFailures

    failures = AuthFailures(real_redis, 60)
    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = list(pool.map(lambda _: failures.add("1.2.3.4", "abc")[0], range(40)))
    assert sorted(counts) == list(range(1, 41))


def test_a_revoked_key_stops_working(api: Api) -> None:
    record, key = api.client.api_keys.create("acme")
    headers = {"Authorization": f"Bearer {key}"}
    assert api.http.get("/v1/jobs", headers=headers).status_code == 200
    assert api.client.api_keys.revoke(record.key_id)
    problem(api.http.get("/v1/jobs", headers=headers), 401)
    assert api.redis.hgetall(keys.APIKEYS_KEY) == {}


def test_a_tenant_sees_only_its_own_jobs(api: Api) -> None:
    job = api.http.post("/v1/jobs", json=JOB, headers=api.key("acme")).json()
    other = api.key("globex")
    problem(api.http.get(job["url"], headers=other), 404)
    problem(api.http.post(job["url"] + "/cancel", headers=other), 404)
    assert api.http.get("/v1/jobs", headers=other).json()["jobs"] == []
    # The same id from another tenant is that tenant's own job, not a conflict.
    own = api.http.post("/v1/jobs", json={**JOB, "job_id": job["job_id"]}, headers=other)
    assert own.status_code == 202, own.text
    assert own.json()["job_id"] != job["job_id"]


def test_job_ids_a_tenant_chooses_live_in_its_own_namespace(api: Api) -> None:
    alice, mallory = api.key("alice"), api.key("mallory")
    first = api.http.post("/v1/jobs", json={**JOB, "job_id": "order-1234"}, headers=alice)
    assert first.status_code == 202
    assert first.json()["job_id"] == "alice.order-1234"
    # Mallory takes the same id with a guessed prompt: her own new job, and nothing tells her
    # whether Alice used the id or what for.
    guess = {"request": {"prompt": "a guess"}, "job_id": "order-1234"}
    again = api.http.post("/v1/jobs", json=guess, headers=mallory)
    assert again.status_code == 202
    assert again.json()["job_id"] == "mallory.order-1234"
    assert again.json()["request"]["prompt"] == "a guess"
    mine = api.http.get("/v1/jobs/order-1234", headers=alice).json()
    assert (mine["job_id"], mine["request"]["prompt"]) == ("alice.order-1234", "a lighthouse")
    assert api.http.get("/v1/jobs/alice.order-1234", headers=alice).status_code == 200
    problem(api.http.get("/v1/jobs/alice.order-1234", headers=mallory), 404)
    # Within a tenant an id still means one job.
    changed = {"request": {"prompt": "something else"}, "job_id": "order-1234"}
    problem(api.http.post("/v1/jobs", json=changed, headers=alice), 409)


def test_an_idempotency_key_returns_the_original_job(api: Api) -> None:
    headers = {**api.key("acme"), "Idempotency-Key": "order-17"}
    first = api.http.post("/v1/jobs", json=JOB, headers=headers)
    again = api.http.post("/v1/jobs", json=JOB, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["job_id"] == first.json()["job_id"]
    assert api.redis.llen("interactive") == 1
    different = {"request": {"prompt": "a windmill"}}
    problem(api.http.post("/v1/jobs", json=different, headers=headers), 409)


def test_a_full_queue_answers_429_with_retry_after(api: Api) -> None:
    headers = api.key("acme")
    for _ in range(5):
        assert api.http.post("/v1/jobs", json=JOB, headers=headers).status_code == 202
    full = api.http.post("/v1/jobs", json=JOB, headers=headers)
    problem(full, 429)
    assert int(full.headers["retry-after"]) >= 1
    # Another tenant still has room.
    assert api.http.post("/v1/jobs", json=JOB, headers=api.key("globex")).status_code == 202


def test_cancel_a_queued_job_then_it_is_final(api: Api) -> None:
    headers = api.key("acme")
    job = api.http.post("/v1/jobs", json=JOB, headers=headers).json()
    canceled = api.http.post(job["url"] + "/cancel", headers=headers)
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    problem(api.http.post(job["url"] + "/cancel", headers=headers), 409)
    # A canceled job no longer counts against the queue cap.
    assert api.client.list_jobs(tenant="acme").jobs[0].status.value == "canceled"
    assert api.redis.zcard(keys.tenant_open_key("acme")) == 0


def test_cancel_after_sets_a_deadline(api: Api) -> None:
    headers = {**api.key("acme"), "Cancel-After": "10m"}
    job = api.http.post("/v1/jobs", json=JOB, headers=headers).json()
    expires = job["expires_at"]
    assert expires is not None
    both = {**JOB, "expires_at": expires}
    problem(api.http.post("/v1/jobs", json=both, headers=headers), 400)
    problem(api.http.post("/v1/jobs", json=JOB, headers={**headers, "Cancel-After": "soon"}), 400)


def test_a_deadline_in_the_past_is_refused(api: Api) -> None:
    body = {**JOB, "expires_at": "2020-01-01T00:00:00Z"}
    found = problem(api.http.post("/v1/jobs", json=body, headers=api.key("acme")), 422)
    assert found["errors"][0]["field"] == "expires_at"


def test_prefer_wait_answers_202_when_the_job_is_not_done_in_time(api: Api) -> None:
    headers = {**api.key("acme"), "Prefer": "wait=1"}
    started = time.monotonic()
    response = api.http.post("/v1/jobs", json=JOB, headers=headers)
    assert response.status_code == 202
    assert response.headers["preference-applied"] == "wait=1"
    assert 0.9 <= time.monotonic() - started < 5


def test_listing_pages_newest_first_without_overlap(api: Api) -> None:
    headers = api.key("acme")
    ids = [api.http.post("/v1/jobs", json=JOB, headers=headers).json()["job_id"] for _ in range(5)]
    first = api.http.get("/v1/jobs?limit=2", headers=headers).json()
    assert [j["job_id"] for j in first["jobs"]] == ids[::-1][:2]
    seen = [j["job_id"] for j in first["jobs"]]
    page = first
    while page["next"]:
        page = api.http.get(page["next"], headers=headers).json()
        seen += [j["job_id"] for j in page["jobs"]]
    assert seen == ids[::-1]
    canceled = api.http.post(f"/v1/jobs/{ids[2]}/cancel", headers=headers).json()
    only = api.http.get("/v1/jobs?status=canceled", headers=headers).json()
    assert [j["job_id"] for j in only["jobs"]] == [canceled["job_id"]]


@pytest.mark.parametrize("as_lines", [False, True])
def test_batches_fan_out_and_report_counts(api: Api, as_lines: bool) -> None:
    headers = api.key("acme")
    jobs = [{"request": {"prompt": f"picture {i}"}} for i in range(3)]
    if as_lines:
        body = "\n".join(json.dumps(j) for j in jobs).encode()
        response = api.http.post(
            "/v1/batches", content=body, headers={**headers, "Content-Type": "application/x-ndjson"}
        )
    else:
        response = api.http.post("/v1/batches", json=jobs, headers=headers)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["size"] == 3
    records = [api.client.get(job_id) for job_id in batch["job_ids"]]
    assert {r.priority for r in records} == {"batch"}  # batch jobs wait in the batch class
    status = api.http.get(batch["url"], headers=headers).json()
    assert status["counts"] == {"queued": 3}
    assert status["job_ids"] == batch["job_ids"]
    listed = api.http.get(f"/v1/jobs?batch={batch['batch_id']}", headers=headers).json()
    assert [j["job_id"] for j in listed["jobs"]] == batch["job_ids"]
    problem(api.http.get(batch["url"], headers=api.key("globex")), 404)


def test_one_bad_job_refuses_the_whole_batch(api: Api) -> None:
    jobs = [{"request": {"prompt": "fine"}}, {"request": {"prompt": "x", "seed": -1}}]
    found = problem(api.http.post("/v1/batches", json=jobs, headers=api.key("acme")), 422)
    assert found["errors"][0]["field"] == "1.request.seed"  # the bad job, by its index
    assert api.redis.llen("batch") == 0


def test_readyz_says_what_is_missing(api: Api) -> None:
    response = api.http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["queue interactive"] == "not declared by any worker"
    assert api.http.get("/healthz").json() == {"status": "ok", "checks": {}, "process": os.getpid()}


def test_the_openapi_document_describes_jobs_and_problems(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    assert "/v1/jobs" in schema["paths"]
    post = schema["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobSpec")
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert "GenerationRequest" in schema["components"]["schemas"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"request": {"prompt": "p"}, "metadata": {"k": "\\ud800"}}', "metadata"),
        ('{"request": {"prompt": "\\udfff lone"}}', "request.prompt"),
        ('{"request": {"prompt": "p"}, "metadata": {"n": NaN}}', "metadata"),
        ('{"request": {"prompt": "p"}, "metadata": {"n": -Infinity}}', "metadata"),
        ('{"request": {"prompt": "p"}, "metadata": ' + "[" * 40 + "]" * 40 + "}", "metadata"),
    ],
)
def test_what_a_record_cannot_carry_is_refused_before_storing(
    api: Api, body: str, field: str
) -> None:
    headers = {**api.key("acme"), "content-type": "application/json"}
    found = problem(api.http.post("/v1/jobs", content=body, headers=headers), 422)
    assert found["errors"][0]["field"] == field
    assert api.redis.llen("interactive") == 0
    listing = api.http.get("/v1/jobs", headers=headers)
    assert listing.status_code == 200
    assert listing.json()["jobs"] == []


def test_nesting_too_deep_to_read_is_a_clear_400(api: Api) -> None:
    body = '{"request": {"prompt": "p"}, "metadata": ' + "[" * 5000 + "]" * 5000 + "}"
    headers = {**api.key("acme"), "content-type": "application/json"}
    found = problem(api.http.post("/v1/jobs", content=body, headers=headers), 400)
    assert "nested too deep" in found["detail"]


def test_a_huge_cancel_after_is_a_clear_400(api: Api) -> None:
    headers = {**api.key("acme"), "Cancel-After": "9" * 30}
    found = problem(api.http.post("/v1/jobs", json=JOB, headers=headers), 400)
    assert found["errors"][0]["field"] == "Cancel-After"


def test_an_oversized_batch_is_refused_before_its_jobs_are_read(api: Api) -> None:
    jobs = [{"not": "even a job"}] * 51
    found = problem(api.http.post("/v1/batches", json=jobs, headers=api.key("acme")), 413)
    assert found["detail"] == "a batch holds at most 50 jobs, not 51"


def test_ids_that_name_other_records_are_simply_not_found(api: Api) -> None:
    headers = api.key("acme")
    batch = api.http.post("/v1/batches", json=[JOB], headers=headers).json()
    other = api.key("other")
    for path in (
        f"/v1/jobs?batch={batch['batch_id']}:jobs",
        f"/v1/jobs?batch={batch['batch_id']}",
        f"/v1/batches/{batch['batch_id']}:jobs",
        f"/v1/jobs/{batch['job_ids'][0]}:parked-image",
    ):
        assert api.http.get(path, headers=other).status_code in (404, 422), path
        assert api.http.get(path, headers=headers).status_code != 500, path


def test_streams_past_the_tenants_bound_answer_429_and_others_still_stream(api: Api) -> None:
    from producer.api.limits import Held

    acme, other = api.key("acme"), api.key("other")
    job = api.http.post("/v1/jobs", json=JOB, headers=acme).json()
    held = api.http.app.state.api.held  # type: ignore[attr-defined]
    while held.take(Held.STREAM, "acme"):  # acme holds every stream it may
        pass
    refused = api.http.get(f"{job['url']}/events", headers=acme)
    problem(refused, 429)
    assert refused.headers["retry-after"] == "5"
    mine = api.http.post("/v1/jobs", json=JOB, headers=other).json()
    api.client.cancel(mine["job_id"])
    with api.http.stream("GET", f"{mine['url']}/events", headers=other) as stream:
        assert stream.status_code == 200
        assert any('"canceled"' in line for line in stream.iter_lines())
    assert held.held(Held.STREAM, "other") == 0  # given back when the stream ended


def test_a_wait_past_the_bound_answers_at_once_with_the_queued_job(api: Api) -> None:
    from producer.api.limits import Held

    held = api.http.app.state.api.held  # type: ignore[attr-defined]
    while held.take(Held.WAIT, "acme"):
        pass
    answered = api.http.post("/v1/jobs", json=JOB, headers={**api.key("acme"), "Prefer": "wait=5"})
    assert answered.status_code == 202
    assert "preference-applied" not in answered.headers
    assert answered.json()["status"] == "queued"


def test_a_stream_ends_when_its_key_is_revoked(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from producer.api import jobs

    monkeypatch.setattr(jobs, "KEY_RECHECK_S", 0.2)
    record, key = api.client.api_keys.create("acme")
    headers = {"Authorization": f"Bearer {key}"}
    job = api.http.post("/v1/jobs", json=JOB, headers=headers).json()
    lines = []
    with api.http.stream("GET", f"{job['url']}/events", headers=headers) as stream:
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data: {"):
                api.client.api_keys.revoke(record.key_id)
    assert "data: the API key was revoked" in lines


def test_metrics_can_require_a_token(settings: Settings) -> None:
    from pydantic import SecretStr

    guarded = settings.model_copy(update={"api_metrics_token": SecretStr("a-long-scrape-token")})
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(guarded, redis_client=redis)) as http:
        problem(http.get("/metrics"), 401)
        problem(http.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
        scraped = http.get("/metrics", headers={"Authorization": "Bearer a-long-scrape-token"})
        assert scraped.status_code == 200
        assert "imagegen_jobs_open" in scraped.text


ULTRA = "stability.stable-image-ultra-v1:0"


@pytest.fixture
def slow_ultra(settings: Settings) -> Iterator[Api]:
    """Ultra at one job per 10 s (its own bucket), an admin token, a cap of 5 per tenant."""
    from imagegen.settings import ModelLimit

    settings = settings.model_copy(
        update={
            "max_queued_per_tenant": 5,
            "model_limits": {ULTRA: ModelLimit(rpm=6, burst=1)},
            "api_admin_token": SecretStr("an-admin-token-for-tests"),
        }
    )
    redis = fakeredis.FakeRedis(decode_responses=True)
    for key in redis.scan_iter(f"imagegen:*{ULTRA}*"):
        redis.delete(key)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield Api(http, Client(settings, redis_client=redis), redis)


def test_a_waiting_job_reports_its_position_and_start_estimate(slow_ultra: Api) -> None:
    api = slow_ultra
    acme = api.key("acme")
    jobs = [
        api.http.post("/v1/jobs", json={**JOB, "model_id": ULTRA}, headers=acme).json()
        for _ in range(4)
    ]
    last = api.http.get(jobs[-1]["url"], headers=acme).json()
    assert last["status"] == "queued"
    assert last["queue_position"] == 2  # two released at once (the bucket's two tokens)
    assert last["tenant_share"] == 1.0
    start = datetime.fromisoformat(last["estimated_start_at"])
    assert 10 < (start - datetime.now(UTC)).total_seconds() <= 21  # one job each 10 s
    # Another tenant's first job goes before acme's backlog, not after it.
    globex = api.key("globex")
    other = api.http.post("/v1/jobs", json={**JOB, "model_id": ULTRA}, headers=globex).json()
    found = api.http.get(other["url"], headers=globex).json()
    assert found["queue_position"] == 1  # its start tag is the virtual time: before acme's next
    assert found["tenant_share"] == 0.5
    tenant = api.http.get("/v1/tenant", headers=globex).json()
    [ultra] = [m for m in tenant["models"] if m["model_id"] == ULTRA]
    assert (ultra["waiting"], ultra["fair_share"]) == (1, 0.5)
    assert "acme" not in json.dumps(tenant)  # a tenant sees its own share, not who else waits


def test_a_deadline_the_queue_cannot_meet_is_refused_with_the_estimate(slow_ultra: Api) -> None:
    api = slow_ultra
    for _ in range(4):
        api.http.post("/v1/jobs", json={**JOB, "model_id": ULTRA}, headers=api.key("acme"))
    headers = {**api.key("globex"), "Cancel-After": "5s"}
    found = problem(
        api.http.post("/v1/jobs", json={**JOB, "model_id": ULTRA}, headers=headers), 422
    )
    [error] = found["errors"]
    assert error["field"] == "expires_at"
    assert "would start at about" in error["message"]
    assert api.client.reads.open_counts("globex") == (4, 0)  # nothing was stored
    headers["Cancel-After"] = "10m"
    assert (
        api.http.post("/v1/jobs", json={**JOB, "model_id": ULTRA}, headers=headers).status_code
        == 202
    )


def test_the_admin_api_sets_a_tenants_weight_and_caps(slow_ultra: Api) -> None:
    api = slow_ultra
    url = "/v1/admin/tenants/acme"
    problem(api.http.put(url, json={"weight": 2}), 401)
    problem(api.http.put(url, json={"weight": 2}, headers=api.key("acme")), 401)  # a tenant key
    admin = {"Authorization": "Bearer an-admin-token-for-tests"}
    found = api.http.put(
        url, json={"weight": 2, "max_concurrency": 3, "share_cache": True}, headers=admin
    )
    assert found.status_code == 200, found.text
    assert found.json() == {"tenant": "acme", "weight": 2.0, "rate_rpm": 0.0, "max_concurrency": 3}
    bad = problem(api.http.put(url, json={"weight": 0}, headers=admin), 422)
    assert "weight" in json.dumps(bad)
    own = api.http.get("/v1/tenant", headers=api.key("acme")).json()
    assert (own["weight"], own["cache_shared"]) == (2.0, True)


def test_without_an_admin_token_there_is_no_admin_api(api: Api) -> None:
    problem(api.http.get("/v1/admin/tenants/acme", headers={"Authorization": "Bearer x"}), 404)


def test_a_tenant_reads_its_spend_and_an_operator_sets_its_budget(slow_ultra: Api) -> None:
    api = slow_ultra
    admin = {"Authorization": "Bearer an-admin-token-for-tests"}
    url = "/v1/admin/tenants/initech/budget"
    problem(api.http.put(url, json={"daily_hard": 1}, headers=api.key("initech")), 401)
    problem(api.http.put(url, json={"daily_hard": -1}, headers=admin), 422)
    budget = {"daily_hard": 0.14, "monthly_soft": 5.0, "on_exceed": "fail"}
    found = api.http.put(url, json=budget, headers=admin)
    assert found.status_code == 200, found.text
    assert found.json() == {**budget, "daily_soft": None, "monthly_hard": None}
    headers = api.key("initech")
    first, second = (
        api.http.post("/v1/jobs", json={**JOB, "model_id": ULTRA}, headers=headers).json()
        for _ in range(2)
    )
    # One Ultra image ($0.14) fits the daily budget; the second job ends without a call.
    assert api.http.get(second["url"], headers=headers).json()["status"] == "budget_exceeded"
    spend = api.http.get("/v1/spend", headers=headers).json()
    assert spend["today"]["reserved_usd"] == pytest.approx(0.14)
    assert spend["budget"]["daily_hard"] == 0.14
    csv = api.http.get("/v1/spend", headers={**headers, "Accept": "text/csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "tenant,day,model_id,images,spend_usd,cache_hits,saved_usd"
    del first


def test_the_served_app_keeps_the_collector_off_what_startup_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full collection walking the app's objects stopped the process for 50-200 ms."""
    monkeypatch.setenv("IMAGEGEN_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached here
    get_settings.cache_clear()
    frozen_before = gc.get_freeze_count()
    try:
        app = app_from_env()
        assert app.openapi_schema is not None  # built at startup, not on a first request
        assert gc.get_freeze_count() - frozen_before > 50_000
    finally:
        gc.unfreeze()
        get_settings.cache_clear()
