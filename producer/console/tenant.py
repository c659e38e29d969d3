"""The tenant's console: submit a job for any model, find its jobs (a table or a gallery,
``finder``) and follow them live (``live``), open one, cancel it, send its webhooks again, see
batches, chains and spend against budget.

Every read goes through the same client and ownership checks as the API: a tenant sees only
its own jobs (another tenant's job id is answered 404, like a missing one).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from imagegen.binding import store_upload
from imagegen.errors import FieldError, ImagegenError, InvalidRequestError, QueueFullError
from imagegen.inputs import UnusableImageError
from imagegen.records import JobRecord, JobStatus
from imagegen.store.job_search import JobQuery
from imagegen.store.sessions import ConsoleSession
from producer.api.jobs import owned_job
from producer.api.problems import ProblemError
from producer.api.state import ApiState, State
from producer.chains import ChainStatus
from producer.console.auth import TenantLogin
from producer.console.finder import Listing, find, listing_of, search
from producer.console.forms import model_form, read_form
from producer.console.render import page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

PICKABLE_OUTPUTS = 20
IMAGE_URL_TTL_S = 900


def _tenant(session: ConsoleSession) -> str:
    assert session.tenant is not None  # a tenant session always names its tenant
    return session.tenant


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
    listing: Listing | None = None,
    status_code: int = 200,
    model_id: str | None = None,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
) -> HTMLResponse:
    tenant = _tenant(session)
    client = state.client
    listing = listing or Listing()
    found = find(state, tenant, listing)
    outputs = search(state).find(
        tenant, JobQuery(status=JobStatus.SUCCEEDED), limit=PICKABLE_OUTPUTS
    )
    day, month = client.spend_now(tenant)
    models = client.models()
    return page(
        "dashboard.html",
        status_code=status_code,
        tenant=tenant,
        jobs=found.jobs,
        found=found,
        listing=listing,
        groups=_groups(state, found.jobs),
        models=models,
        statuses=[status.value for status in JobStatus],
        forms={m["model_id"]: model_form(m["model_id"]) for m in models},
        selected=model_id or state.settings.model_id,
        values=values or {},
        errors=errors or {},
        notice=notice or listing.notice,
        outputs=outputs.jobs,
        budget=client.budget(tenant),
        day=day,
        month=month,
    )


@router.get("/console")
def dashboard(
    request: Request, state: State, session: TenantLogin, submitted: str = ""
) -> HTMLResponse:
    notice = f"Job {submitted} submitted." if submitted else ""
    return _dashboard(state, session, listing=listing_of(request), notice=notice)


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


def _job_context(state: ApiState, job_id: str, tenant: str) -> dict[str, Any]:
    """The job (with its place in the queue) and its chain; which jobs its page follows live,
    and whether all of them are final."""
    record = state.client.with_position(owned_job(state, job_id, tenant))
    chain = state.client.chain(record.chain_id) if record.chain_id else None
    steps = chain.steps if chain else []
    watched = [record.job_id, *(s.job_id for s in steps if s.job_id != record.job_id)]
    final = record.is_terminal and all(s.status.is_terminal for s in steps)
    viewer = state.settings.console_trace_url
    trace_url = (
        viewer.replace("{trace_id}", record.trace_id) if viewer and record.trace_id else None
    )
    return {
        "tenant": tenant,
        "job": record,
        "chain": chain,
        "watched": watched,
        "final": final,
        "trace_url": trace_url,
    }


@router.get("/console/jobs/{job_id}")
def job_page(job_id: str, state: State, session: TenantLogin) -> HTMLResponse:
    return page("job.html", **_job_context(state, job_id, _tenant(session)))


@router.get("/console/jobs/{job_id}/live")
def job_live(job_id: str, state: State, session: TenantLogin) -> HTMLResponse:
    """The job page's body alone: what its live page puts in place when an event names the job
    or one of its chain's steps."""
    return page("_job_body.html", **_job_context(state, job_id, _tenant(session)))


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
