"""Reference tables of the docs against the code: the metrics table of docs/operations.md names
every family the API's /metrics and a worker expose (pools' families appear only where pools are
configured; the table has them too), and the job record's table every field of the API's job."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

import worker.metrics  # noqa: F401  (registers the worker's families)
from imagegen.settings import Settings
from producer.api import create_app

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPERATIONS = DOCS / "operations.md"


def _family(name: str) -> str:
    return name.removesuffix("_total")


def _documented() -> set[str]:
    rows = [line for line in OPERATIONS.read_text().splitlines() if line.startswith("| `imagegen_")]
    return {_family(name) for row in rows for name in re.findall(r"`(imagegen_\w+)", row)}


def test_the_table_names_every_family_the_api_exposes(settings: Settings) -> None:
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        scraped = http.get("/metrics").text
    exposed = {_family(name) for name in re.findall(r"^# TYPE (imagegen_\w+) ", scraped, re.M)}
    assert "imagegen_jobs_open" in exposed
    assert exposed - _documented() == set()


def test_the_table_names_every_family_a_worker_exposes() -> None:
    exposed = {
        _family(family.name)
        for family in REGISTRY.collect()
        if family.name.startswith("imagegen_worker_")
    }
    assert "imagegen_worker_bedrock_latency_seconds" in exposed
    assert exposed - _documented() == set()


def test_the_job_record_table_names_every_field_of_a_job(settings: Settings) -> None:
    app = create_app(settings, redis_client=fakeredis.FakeRedis(decode_responses=True))
    schemas = app.openapi()["components"]["schemas"]
    fields = set(schemas["JobResource"]["properties"])
    page = (DOCS / "submitting" / "index.md").read_text()
    table = page[page.index("## The job record") :]
    first_cells = [row.split(" | ")[0] for row in table.splitlines() if row.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([a-z0-9_]+)`", cell)}
    assert {"job_id", "status", "image_url"} <= fields
    assert fields - named == set()
    assert named - fields == set()
