"""The operator's console: each model's quota (configured and effective rate, tokens, throttles,
charted live), each Bedrock pool's quota, circuit and day, where jobs are (waiting in the
dispatcher, how long the oldest has waited, paused tenant queues, released, running), tenants'
shares and waits, the Celery queues, dead letters with replay, failing webhook endpoints and the
quarantine."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from imagegen.store.pool_stats import PoolStats
from imagegen.store.quota import QuotaStore
from imagegen.store.quota_history import QuotaHistory
from producer.api.state import ApiState, State
from producer.console.auth import Operator
from producer.console.render import page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

DEAD_LETTERS_SHOWN = 50
QUARANTINE_SHOWN = 20


def _quota(state: ApiState) -> list[dict[str, Any]]:
    """Each model's quota as every worker sees it, and how many of its jobs wait."""
    client = state.client
    return [
        {
            **dataclasses.asdict(status),
            "waiting": client.dispatch.waiting_total(status.model_id),
        }
        for status in client.quota()
    ]


def _pools(state: ApiState) -> list[dict[str, Any]]:
    """Each configured pool of each model: its quota, its circuit and today's calls."""
    client = state.client
    settings = client.settings
    if not settings.pools:
        return []
    day = time.strftime("%Y-%m-%d", time.gmtime())
    today = {
        (d.pool, d.model_id): d
        for d in PoolStats(state.redis).days([p.name for p in settings.pools], [day])
    }
    store = QuotaStore(state.redis, settings)
    found = []
    for model_id in settings.allowed_model_ids:
        for status in store.pool_statuses(model_id):
            entry = today.get((status.pool, model_id))
            found.append(
                {
                    "status": status,
                    "model_id": model_id,
                    "today": entry,
                    "circuit_until": time.strftime(
                        "%H:%M:%S", time.gmtime(status.circuit_until_ms / 1000)
                    )
                    if status.circuit_until_ms
                    else None,
                }
            )
    return found


@router.get("/console/operator")
def operator_page(state: State, session: Operator) -> HTMLResponse:
    client = state.client
    models = client.dispatch.snapshot(
        client.dispatch.known_models(), client.settings.metrics_tenants_max
    )
    return page(
        "operator.html",
        quota=_quota(state),
        pools=_pools(state),
        models=[m for m in models if m.waiting or m.active or m.delayed or m.shares],
        queues=client.stats.queues(),
        dead_letters=client.dead_letters(DEAD_LETTERS_SHOWN),
        endpoints=client.webhook_deliveries.failing_endpoints(),
        quarantined=client.quarantine.list(QUARANTINE_SHOWN),
    )


@router.get("/console/operator/quota.json")
def quota_json(state: State, session: Operator, history: bool = False) -> JSONResponse:
    """What the live chart plots, sampled by the page every few seconds; with ``history``, the
    samples the fleet kept (``quota_history``) as well, so the chart opens full."""
    models = _quota(state)
    body: dict[str, Any] = {"at_ms": int(time.time() * 1000), "models": models}
    if history:
        kept = QuotaHistory(state.redis).read([m["model_id"] for m in models])
        body["history"] = {
            model_id: [dataclasses.asdict(sample) for sample in samples]
            for model_id, samples in kept.items()
            if samples
        }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


@router.post("/console/operator/replay")
def replay(
    state: State, session: Operator, job_id: Annotated[str, Form(max_length=200)]
) -> Response:
    state.client.replay([job_id])
    return RedirectResponse("/console/operator", status_code=303)
