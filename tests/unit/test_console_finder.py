"""The console's search, gallery and live pieces over HTTP: search by a word of the prompt and
by status, the gallery of succeeded jobs, paging through every job, the rows a live page asks
for by id (the tenant's own only), a job page's live body, and one stream slot per session."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient

from imagegen.records import JobStatus
from imagegen.settings import Settings
from imagegen.store import job_index
from imagegen.store.jobs import ClaimState
from producer.api import create_app
from producer.api.limits import Held, HeldLimits
from producer.client import Client
from producer.console.live import SessionStreams, _event

CORE = "stability.stable-image-core-v1:0"
ULTRA = "stability.stable-image-ultra-v1:1"


class Console:
    def __init__(self, http: TestClient, client: Client) -> None:
        self.http = http
        self.client = client

    def login(self, tenant: str) -> None:
        _, key = self.client.api_keys.create(tenant)
        page = self.http.get("/console/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', page)
        assert token
        answer = self.http.post(
            "/console/login", data={"key": key, "csrf": token[1]}, follow_redirects=False
        )
        assert answer.status_code == 303

    def finish(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        record = self.client.get(job_id)
        self.client.dispatch.release(record.model_id)
        claim = self.client.jobs.claim(job_id, "worker-1", 60_000)
        assert claim.state is ClaimState.CLAIMED, claim
        fields: dict[str, Any] = {"error_code": "ModelErrorException", "error_message": "boom"}
        if status is JobStatus.SUCCEEDED:
            key = f"images/{job_id}.png"
            fields = {"s3_bucket": "b", "s3_key": key, "s3_uri": f"s3://b/{key}"}
        self.client.jobs.finish(job_id, "worker-1", status, fields)


@pytest.fixture
def console(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    monkeypatch.setattr(job_index, "READ_SETTLE_EVERY_MS", 1)
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield Console(http, Client(settings, redis_client=redis))


def row_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="job-([^"]+)"', html)


def tile_ids(html: str) -> list[str]:
    return re.findall(r'<figure class="tile" id="tile-([^"]+)"', html)


def test_search_by_a_word_of_the_prompt_and_by_status(console: Console) -> None:
    console.login("acme")
    lighthouse = console.client.submit("A lighthouse on a rocky coast", tenant="acme")
    fox = console.client.submit("A red fox in the snow", tenant="acme")
    console.client.submit("A lighthouse of a rival", tenant="rival")
    console.finish(fox.job_id, JobStatus.FAILED)
    page = console.http.get("/console", params={"q": "Lighthouse"}).text
    assert row_ids(page) == [lighthouse.job_id]
    assert 'value="Lighthouse"' in page
    assert "A lighthouse on a rocky coast" in page  # the prompt column
    assert row_ids(console.http.get("/console", params={"status": "failed"}).text) == [fox.job_id]
    only_model = console.http.get("/console", params={"model": ULTRA}).text
    assert row_ids(only_model) == []
    assert "No job matches." in only_model
    refused = console.http.get("/console", params={"status": "nonsense", "since": "yesterday"})
    assert refused.status_code == 200
    assert "Left out: status, since." in refused.text
    assert set(row_ids(refused.text)) == {lighthouse.job_id, fox.job_id}


def test_the_gallery_shows_succeeded_jobs_newest_first(console: Console) -> None:
    console.login("acme")
    first = console.client.submit("a first painting", tenant="acme")
    second = console.client.submit("a second painting", tenant="acme")
    failed = console.client.submit("a failed painting", tenant="acme")
    waiting = console.client.submit("a waiting painting", tenant="acme")
    for job in (first, second):
        console.finish(job.job_id)
    console.finish(failed.job_id, JobStatus.FAILED)
    page = console.http.get("/console", params={"view": "gallery"}).text
    assert tile_ids(page) == [second.job_id, first.job_id]
    assert f'src="/console/jobs/{second.job_id}/image"' in page
    assert waiting.job_id not in tile_ids(page)
    searched = console.http.get("/console", params={"view": "gallery", "q": "second"}).text
    assert tile_ids(searched) == [second.job_id]


def test_paging_through_every_job(console: Console) -> None:
    console.login("acme")
    ids = {console.client.submit(f"a tree {i}", tenant="acme").job_id for i in range(60)}
    first = console.http.get("/console").text
    assert len(row_ids(first)) == 50
    older = re.search(r'href="/console\?([^"]+)" rel="next"', first)
    assert older
    second = console.http.get(f"/console?{older[1].replace('&amp;', '&')}").text
    assert len(row_ids(second)) == 10
    assert 'rel="next"' not in second
    assert set(row_ids(first)) | set(row_ids(second)) == ids


def test_rows_asked_by_id_are_the_tenants_own_and_say_whether_they_match(
    console: Console,
) -> None:
    console.login("acme")
    mine = console.client.submit("a blue boat", tenant="acme")
    other = console.client.submit("a green boat", tenant="acme")
    theirs = console.client.submit("a blue boat", tenant="rival")
    ids = ",".join([mine.job_id, other.job_id, theirs.job_id, "no-such-job"])
    rows = console.http.get("/console/rows", params={"ids": ids, "q": "blue"}).text
    assert row_ids(rows) == [mine.job_id, other.job_id]
    assert re.search(rf'id="job-{mine.job_id}"[^>]*data-match="1"', rows)
    assert re.search(rf'id="job-{other.job_id}"[^>]*data-match="0"', rows)
    console.finish(mine.job_id)
    tiles = console.http.get("/console/rows", params={"ids": ids, "view": "gallery"}).text
    assert tile_ids(tiles) == [mine.job_id]


def test_a_job_pages_live_body(console: Console) -> None:
    console.login("acme")
    job = console.client.submit("a slow sunrise", tenant="acme")
    body = console.http.get(f"/console/jobs/{job.job_id}/live").text
    assert body.startswith('<div id="job-live"')
    assert 'data-final="0"' in body
    assert "Cancel this job" in body
    assert 'name="csrf"' in body  # its form carries the token
    console.finish(job.job_id)
    body = console.http.get(f"/console/jobs/{job.job_id}/live").text
    assert 'data-final="1"' in body
    assert 'id="job-status">succeeded' in body
    assert f'<img class="full" src="/console/jobs/{job.job_id}/image"' in body
    theirs = console.client.submit("not yours", tenant="rival")
    assert console.http.get(f"/console/jobs/{theirs.job_id}/live").status_code == 404


def test_the_session_check(console: Console) -> None:
    assert console.http.get("/console/session", follow_redirects=False).status_code == 303
    console.login("acme")
    assert console.http.get("/console/session").status_code == 204


def test_a_session_holds_one_stream_slot_however_many_tabs() -> None:
    held = HeldLimits(per_tenant={Held.STREAM: 2}, total={Held.STREAM: 10})
    streams = SessionStreams(held)
    tabs = [streams.open("browser-1", "acme") for _ in range(6)]
    assert tabs == [1, 2, 3, 4, 5, 6]
    assert held.held(Held.STREAM, "acme") == 1
    assert [streams.is_current("browser-1", g) for g in (1, 6)] == [False, True]
    assert streams.open("browser-2", "acme") == 1
    assert streams.open("browser-3", "acme") is None  # the tenant's two slots are taken
    for _ in range(5):
        streams.close("browser-1")
    assert held.held(Held.STREAM, "acme") == 2
    streams.close("browser-1")
    assert held.held(Held.STREAM, "acme") == 1
    assert streams.open("browser-3", "acme") == 1


def test_a_stream_passes_on_only_an_events_known_fields() -> None:
    message = '{"job_id": "j1", "status": "running", "place": "running", "prompt": "secret"}'
    assert _event(message) == (
        'event: job\ndata: {"job_id": "j1", "status": "running", "place": "running"}\n\n'
    )
    assert _event("not json") is None
    assert _event('{"status": "queued"}') is None
