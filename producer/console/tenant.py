"""The tenant's console: submit a job for any model, follow its jobs live, open one, cancel it,
send its webhooks again, see batches, chains and spend against budget.

Every read goes through the same client and ownership checks as the API: a tenant sees only
its own jobs (another tenant's job id is answered 404, like a missing one).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.datastructures import FormData

from imagegen.binding import store_upload
from imagegen.errors import FieldError, ImagegenError, InvalidRequestError, QueueFullError
from imagegen.inputs import UnusableImageError
from imagegen.records import JobRecord, JobStatus
from imagegen.store.sessions import ConsoleSession
from producer.api.jobs import owned_job
from producer.api.limits import Held
from producer.api.problems import ProblemError
from producer.api.state import ApiState, State
from producer.chains import ChainStatus
from producer.console.auth import COOKIE, TenantLogin, sessions
from producer.console.forms import model_form, read_form
from producer.console.render import page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

JOBS_SHOWN = 50
PICKABLE_OUTPUTS = 20
EVENTS_HEARTBEAT_S = 15.0
# An event stream checks its session this often, busy or not, and ends with it.
SESSION_RECHECK_S = 2.0
IMAGE_URL_TTL_S = 900


def _tenant(session: ConsoleSession) -> str:
    assert session.tenant is not None  # a tenant session always names its tenant
    return session.tenant


def _jobs(state: ApiState, tenant: str) -> list[JobRecord]:
    client = state.client
    listed = client.list_jobs(tenant=tenant, limit=JOBS_SHOWN).jobs
    return [client.with_position(record) for record in listed]


def _groups(state: ApiState, jobs: list[JobRecord]) -> list[dict[str, Any]]:
    """The batches and chains the listed jobs belong to, with their progress."""
    client, found, seen = state.client, [], set()
    for job in jobs:
        group_id = job.chain_id or job.batch_id
        if group_id is None or group_id in seen:
            continue
        seen.add(group_id)
        try:
            if job.chain_id:
                chain: ChainStatus = client.chain(job.chain_id)
                done = sum(step.status.is_terminal for step in chain.steps)
                found.append(
                    {
                        "kind": "chain",
                        "id": chain.chain_id,
                        "status": chain.status,
                        "done": done,
                        "size": len(chain.steps),
                        "reason": chain.reason,
                    }
                )
            else:
                batch = client.batch(group_id)
                done = sum(n for s, n in batch.counts.items() if JobStatus(s).is_terminal)
                found.append(
                    {
                        "kind": "batch",
                        "id": group_id,
                        "status": ", ".join(f"{n} {s}" for s, n in batch.counts.items()),
                        "done": done,
                        "size": batch.size,
                        "reason": None,
                    }
                )
        except (ImagegenError, ValueError):
            continue
    return found


def _dashboard(
    state: ApiState,
    session: ConsoleSession,
    *,
    status_code: int = 200,
    model_id: str | None = None,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
) -> HTMLResponse:
    tenant = _tenant(session)
    client = state.client
    jobs = _jobs(state, tenant)
    day, month = client.spend_now(tenant)
    models = client.models()
    return page(
        "dashboard.html",
        status_code=status_code,
        tenant=tenant,
        jobs=jobs,
        groups=_groups(state, jobs),
        models=models,
        forms={m["model_id"]: model_form(m["model_id"]) for m in models},
        selected=model_id or state.settings.model_id,
        values=values or {},
        errors=errors or {},
        notice=notice,
        outputs=[j for j in jobs if j.status is JobStatus.SUCCEEDED][:PICKABLE_OUTPUTS],
        budget=client.budget(tenant),
        day=day,
        month=month,
    )


@router.get("/console")
def dashboard(state: State, session: TenantLogin, submitted: str = "") -> HTMLResponse:
    notice = f"Job {submitted} submitted." if submitted else ""
    return _dashboard(state, session, notice=notice)


@router.get("/console/rows")
def rows(state: State, session: TenantLogin) -> HTMLResponse:
    return page("rows.html", jobs=_jobs(state, _tenant(session)))


@router.post("/console/jobs")
async def submit(request: Request, state: State, session: TenantLogin) -> Response:
    async with request.form() as form:  # uploaded files are closed when it ends
        return await _submit(form, state, session)


async def _submit(form: FormData, state: ApiState, session: ConsoleSession) -> Response:
    tenant = _tenant(session)
    model_id = str(form.get("model_id") or state.settings.model_id)
    values = {k: v for k, v in form.items() if isinstance(v, str)}

    def upload(field: str, data: bytes, content_type: str | None) -> str:
        try:
            return store_upload(state.client.s3(), state.settings, tenant, data, content_type).uri
        except UnusableImageError as e:
            raise ValueError(str(e)) from e

    request_body, upload_errors = await anyio.to_thread.run_sync(
        lambda: read_form(model_id, form, upload)
    )
    job: dict[str, Any] = {"model_id": model_id, "request": request_body}
    if form.get("priority"):
        job["priority"] = str(form.get("priority"))
    try:
        if upload_errors:
            raise InvalidRequestError(upload_errors)
        [submitted] = await anyio.to_thread.run_sync(
            lambda: state.client.create_jobs([job], tenant=tenant)
        )
    except InvalidRequestError as e:
        return _dashboard(
            state,
            session,
            status_code=422,
            model_id=model_id,
            values=values,
            errors=_by_input(e.errors),
        )
    except QueueFullError as e:
        return _dashboard(
            state,
            session,
            status_code=429,
            model_id=model_id,
            values=values,
            errors={"form": str(e)},
        )
    return RedirectResponse(f"/console?submitted={submitted.record.job_id}", status_code=303)


def _by_input(errors: tuple[FieldError, ...] | list[FieldError]) -> dict[str, str]:
    """Field errors keyed by the form input they belong to (``request.prompt`` -> prompt)."""
    found: dict[str, str] = {}
    for error in errors:
        name = error.field.removeprefix("request.") if error.field != "request" else "form"
        found.setdefault(name.split(".")[0], error.message)
    return found


@router.get("/console/jobs/{job_id}")
def job_page(job_id: str, state: State, session: TenantLogin) -> HTMLResponse:
    record = state.client.with_position(owned_job(state, job_id, _tenant(session)))
    chain = state.client.chain(record.chain_id) if record.chain_id else None
    return page("job.html", tenant=_tenant(session), job=record, chain=chain)


@router.post("/console/jobs/{job_id}/cancel")
def cancel(job_id: str, state: State, session: TenantLogin) -> Response:
    record = owned_job(state, job_id, _tenant(session))
    if not record.is_terminal:
        state.client.cancel(record.job_id)
    return RedirectResponse(f"/console/jobs/{record.job_id}", status_code=303)


@router.post("/console/jobs/{job_id}/redeliver")
def redeliver(job_id: str, state: State, session: TenantLogin) -> Response:
    record = owned_job(state, job_id, _tenant(session))
    state.client.webhook_deliveries.redeliver_job(record.job_id)
    return RedirectResponse(f"/console/jobs/{record.job_id}", status_code=303)


@router.get("/console/jobs/{job_id}/image")
def image(job_id: str, state: State, session: TenantLogin) -> Response:
    """The job's image, through a short-lived presigned S3 URL (never through the API)."""
    record = owned_job(state, job_id, _tenant(session))
    if record.status is not JobStatus.SUCCEEDED or not (record.s3_bucket and record.s3_key):
        raise ProblemError(404, "No image", f"job {record.job_id} has no image")
    url = state.client.s3().generate_presigned_url(
        "get_object",
        Params={"Bucket": record.s3_bucket, "Key": record.s3_key},
        ExpiresIn=IMAGE_URL_TTL_S,
    )
    return RedirectResponse(url, status_code=302, headers={"Cache-Control": "private, max-age=60"})


@router.get("/console/events")
def events(request: Request, state: State, session: TenantLogin) -> Response:
    """Server-sent events: ``event: job`` whenever one of the tenant's jobs changes status."""
    tenant = _tenant(session)
    if not state.held.take(Held.STREAM, tenant):
        raise ProblemError(429, "Too many event streams", "close another console tab")
    token = request.cookies.get(COOKIE, "")
    return StreamingResponse(
        _stream(state, tenant, token),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _stream(state: ApiState, tenant: str, token: str) -> AsyncIterator[str]:
    """The tenant's events until its session ends (logged out, expired, or its key revoked):
    the session is checked every ``SESSION_RECHECK_S`` however many events flow."""
    client = state.client
    try:
        events = await anyio.to_thread.run_sync(client.reads.subscribe_all)
        try:
            yield "retry: 3000\n\n"
            session_checked = quiet_since = time.monotonic()
            while True:
                if time.monotonic() - session_checked >= SESSION_RECHECK_S:
                    session_checked = time.monotonic()
                    if await anyio.to_thread.run_sync(sessions(state).get, token) is None:
                        return
                message = await anyio.to_thread.run_sync(events.next, SESSION_RECHECK_S)
                if message is None:
                    if time.monotonic() - quiet_since >= EVENTS_HEARTBEAT_S:
                        quiet_since = time.monotonic()
                        yield ": heartbeat\n\n"
                    continue
                event = json.loads(message["data"])
                [record] = await anyio.to_thread.run_sync(client.get_many, [event["job_id"]])
                if record is not None and record.tenant == tenant:
                    yield f"event: job\ndata: {json.dumps(event)}\n\n"
        finally:
            await anyio.to_thread.run_sync(events.close)
    finally:
        state.held.give_back(Held.STREAM, tenant)
