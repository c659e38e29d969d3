"""Attacks over plain HTTP on a real API process: exhausting its connections, guessing keys,
taking another tenant's ids, sending what a record cannot carry, and aiming webhooks at our
own network. Each fails safely, and the other tenant's requests keep succeeding."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from imagegen.contract import JobSpec
from imagegen.records import NewJob
from imagegen.store.spend import Budget
from producer.client import Client

pytestmark = pytest.mark.integration

JOB = {"request": {"prompt": "a lighthouse"}}


@pytest.fixture
def api(secure_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secure_stack.urls["api"], timeout=30) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_one_tenants_streams_cannot_starve_another(
    api: httpx.Client, secure_stack: Stack, tenant_keys: dict[str, str]
) -> None:
    mallory, alice = bearer(tenant_keys["mallory"]), bearer(tenant_keys["alice"])
    # A job of Mallory's that stays waiting (no budget: its queue is paused): its streams stay
    # open.
    with Client(secure_stack.settings()) as client:
        client.set_budget(Budget("mallory", daily_hard=0.0))
        spec = JobSpec.parse({"request": {"prompt": "waits for ever"}})
        waiting = NewJob("mallory.waits", "stability.stable-image-core-v1:0", spec, 1, "mallory")
        client.jobs.create([waiting], dispatch=client.dispatch)
    job = {"url": "/v1/jobs/waits"}
    opened: list[httpx.Response] = []
    stop = threading.Event()
    streams = []

    def hold_stream() -> None:
        with (
            httpx.Client(base_url=secure_stack.urls["api"], timeout=60) as own,
            own.stream("GET", f"{job['url']}/events", headers=mallory) as response,
        ):
            opened.append(response)
            for _ in response.iter_lines():
                if stop.is_set():
                    return

    for _ in range(99):
        thread = threading.Thread(target=hold_stream, daemon=True)
        thread.start()
        streams.append(thread)
    deadline = time.monotonic() + 20
    while len(opened) < 99 and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        codes = sorted(r.status_code for r in opened)
        assert codes.count(200) == 4  # the tenant's bound; the rest were refused at once
        assert set(codes) == {200, 429}
        answers = [api.get("/v1/jobs", headers=alice).status_code for _ in range(20)]
        assert answers == [200] * 20
        waited = api.post("/v1/jobs", json=JOB, headers={**alice, "Prefer": "wait=20"})
        assert waited.status_code == 200
        assert waited.json()["status"] == "succeeded"
    finally:
        stop.set()
        api.post(f"{job['url']}/cancel", headers=mallory)  # the streams see it end
        with Client(secure_stack.settings()) as client:
            client.set_budget(Budget("mallory"))  # no budget again, for the other tests


def test_guessing_keys_is_braked_and_never_locks_out_a_valid_key(
    api: httpx.Client, tenant_keys: dict[str, str]
) -> None:
    bad = [
        api.get("/v1/jobs", headers=bearer(f"igk_{n:012x}_guess")).status_code for n in range(14)
    ]
    assert bad[:10] == [401] * 10
    assert set(bad[10:]) == {429}
    spoofed = {**bearer("igk_000000000000_guess"), "X-Forwarded-For": "198.51.100.1"}
    assert api.get("/v1/jobs", headers=spoofed).status_code == 429
    assert api.get("/v1/jobs", headers=bearer(tenant_keys["alice"])).status_code == 200


def test_a_tenant_cannot_take_or_probe_another_tenants_job_id(
    api: httpx.Client, tenant_keys: dict[str, str]
) -> None:
    alice, mallory = bearer(tenant_keys["alice"]), bearer(tenant_keys["mallory"])
    mine = api.post("/v1/jobs", json={**JOB, "job_id": "order-77"}, headers=alice)
    assert mine.status_code == 202
    # Mallory probes Alice's id with Alice's prompt: she gets a new job of her own, exactly as
    # when the id was never used, so she learns nothing.
    taken = api.post("/v1/jobs", json={**JOB, "job_id": "order-77"}, headers=mallory)
    assert taken.status_code == 202
    assert taken.json()["job_id"] == "mallory.order-77"
    fresh = api.post("/v1/jobs", json={**JOB, "job_id": "never-used"}, headers=mallory)
    assert fresh.status_code == taken.status_code
    again = api.post("/v1/jobs", json={**JOB, "job_id": "order-77"}, headers=alice)
    assert (again.status_code, again.json()["job_id"]) == (200, "alice.order-77")
    assert api.get(f"/v1/jobs/{mine.json()['job_id']}", headers=mallory).status_code == 404


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ('{"request": {"prompt": "p"}, "metadata": {"k": "\\ud800"}}', {}, 422),
        ('{"request": {"prompt": "p"}, "metadata": {"n": NaN}}', {}, 422),
        ('{"request": {"prompt": "p"}, "metadata": ' + "[" * 500 + "]" * 500 + "}", {}, 422),
        ('{"request": {"prompt": "p"}, "metadata": ' + "[" * 9000 + "]" * 9000 + "}", {}, 400),
        ('{"request": {"prompt": "p"}}', {"Cancel-After": "9" * 40}, 422),
        ('{"request": {"prompt": "p"}}', {"Cancel-After": "99999999999d"}, 400),
        ('{"request": {"prompt": "p"}, "webhook_url": "https://192.0.0.192/x"}', {}, 422),
        ('{"request": {"prompt": "p"}, "webhook_url": "https://[fec0::1]/x"}', {}, 422),
        ('{"request": {"prompt": "p"}, "webhook_url": "https://8.8.8.8:25/x"}', {}, 422),
    ],
)
def test_what_cannot_be_stored_or_reached_is_refused_without_a_500(
    api: httpx.Client, tenant_keys: dict[str, str], body: str, headers: dict[str, str], status: int
) -> None:
    alice = {**bearer(tenant_keys["alice"]), "content-type": "application/json", **headers}
    answer = api.post("/v1/jobs", content=body, headers=alice)
    assert answer.status_code == status, answer.text
    assert answer.json()["errors"] or answer.json()["detail"]
    listing = api.get("/v1/jobs?limit=200", headers=alice)
    assert listing.status_code == 200  # nothing unreadable was stored


def test_batches_are_bounded_before_reading_and_other_tenants_batches_are_404(
    api: httpx.Client, tenant_keys: dict[str, str]
) -> None:
    alice, mallory = bearer(tenant_keys["alice"]), bearer(tenant_keys["mallory"])
    lines = "\n".join(['{"request": {"prompt": "p"}}'] * 10_001)
    started = time.monotonic()
    huge = api.post(
        "/v1/batches", content=lines, headers={**alice, "content-type": "application/x-ndjson"}
    )
    assert huge.status_code == 413
    assert time.monotonic() - started < 5
    bad = api.post("/v1/batches", json=[JOB, {"request": {"prompt": ""}}], headers=alice)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"].startswith("1.request.prompt")
    batch = api.post("/v1/batches", json=[JOB], headers=alice).json()
    for path in (f"/v1/batches/{batch['batch_id']}", f"/v1/jobs?batch={batch['batch_id']}:jobs"):
        assert api.get(path, headers=mallory).status_code == 404
