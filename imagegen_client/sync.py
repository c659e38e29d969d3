"""``ImagegenClient``: the HTTP API with an API key, blocking (``AsyncImagegenClient`` has the
same methods for asyncio)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from itertools import count
from os import PathLike
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

import httpx2 as httpx
from pydantic import BaseModel

from imagegen_client.calls import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_WAIT_S,
    STREAM_READ_TIMEOUT_S,
    Call,
    ClientConfig,
    Priority,
    error_of,
    event_job,
    finished_chain,
    finished_job,
    image_content_type,
    job_body,
    job_id_of,
    list_call,
    polling_delays,
    redirect_target,
    segment,
    submit_call,
    trace_headers,
)
from imagegen_client.errors import (
    ApiConnectionError,
    RequestTimeoutError,
    StreamEndedError,
    WaitTimeoutError,
)
from imagegen_client.records import (
    Batch,
    BatchCreated,
    Chain,
    ChainCreated,
    Job,
    JobPage,
    JobStatus,
    Model,
    Upload,
    WebhookSecrets,
)
from imagegen_client.retries import RetryPolicy

__all__ = ["ImagegenClient"]

R = TypeVar("R", bound=BaseModel)


class ImagegenClient:
    """Submit jobs, follow them and download their images over the HTTP API.

    >>> with ImagegenClient("http://127.0.0.1:8000", api_key="...") as client:
    ...     job = client.run("a lighthouse at dawn", aspect_ratio="16:9")
    ...     png = client.download(job)

    ``base_url`` and ``api_key`` default to ``IMAGEGEN_API_URL`` and ``IMAGEGEN_API_KEY``. Every
    request gives up after ``timeout_s`` (``RequestTimeoutError``); a 429 or 503 is sent again
    after its ``Retry-After`` as ``retry`` allows. Errors are ``ApiError`` subclasses carrying
    the API's problem. ``http_client`` replaces the connection pool (a FastAPI ``TestClient``
    in tests, or one with your own transport); the client then does not close it.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        max_poll_interval_s: float = 2.0,
        http_client: httpx.Client | None = None,
    ) -> None:
        if http_client is not None and base_url is None:
            base_url = str(http_client.base_url)
        self.config = ClientConfig.resolve(base_url, api_key, timeout_s, retry, max_poll_interval_s)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(base_url=self.config.base_url)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- jobs --------------------------------------------------------------------------------

    def submit(
        self,
        request: str | Mapping[str, Any],
        *,
        model_id: str | None = None,
        job_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        priority: Priority | None = None,
        webhook_url: str | None = None,
        webhook_events: Iterable[str] | None = None,
        expires_at: datetime | None = None,
        idempotency_key: str | None = None,
        wait_s: float | None = None,
        **request_fields: Any,
    ) -> Job:
        """Queue one job: a prompt (``submit("a fox", aspect_ratio="16:9")``), a request
        mapping, or a whole job (``{"request": {...}, "metadata": ...}``). ``wait_s`` asks the
        API to answer once the job is final or after that long (``Prefer: wait``, at most 30 s);
        the same ``idempotency_key`` and body within 24 h return the first job."""
        body = job_body(
            request,
            model_id=model_id,
            job_id=job_id,
            metadata=metadata,
            priority=priority,
            webhook_url=webhook_url,
            webhook_events=webhook_events,
            expires_at=expires_at,
            request_fields=request_fields,
        )
        return self._record(Job, submit_call(body, idempotency_key, wait_s))

    def get(self, job_id: str) -> Job:
        """The job as it is now (a fresh ``image_url`` once it succeeded)."""
        return self._record(Job, Call("GET", f"/v1/jobs/{segment(job_id)}"))

    def list(
        self,
        *,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """One page of the tenant's jobs, newest first; pass ``next_cursor`` for the next."""
        return self._record(JobPage, list_call(status, batch_id, cursor, limit))

    def iter_jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        batch_id: str | None = None,
        page_size: int = 50,
    ) -> Iterator[Job]:
        """Every job, newest first, reading one page at a time."""
        cursor: str | None = None
        while True:
            page = self.list(status=status, batch_id=batch_id, cursor=cursor, limit=page_size)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a waiting one is ``canceled`` at once, a running one stops before its
        Bedrock call or its upload (``cancel_requested``); a final one is a ``ConflictError``."""
        return self._record(Job, Call("POST", f"/v1/jobs/{segment(job_id)}/cancel"))

    def wait(self, job_id: str, *, timeout_s: float = DEFAULT_WAIT_S) -> Job:
        """The job once it succeeded. Raises ``JobFailedError`` (with ``.job``) when it ended
        without an image, ``WaitTimeoutError`` (with ``.job`` as last read) after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for delay in polling_delays(self.config.max_poll_interval_s):
            job = self.get(job_id)
            if job.is_terminal:
                return finished_job(job)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(f"job {job_id}", timeout_s, job)
            time.sleep(min(delay, remaining))
        raise AssertionError  # pragma: no cover (the delays never end)

    def run(
        self,
        request: str | Mapping[str, Any],
        *,
        timeout_s: float = DEFAULT_WAIT_S,
        **options: Any,
    ) -> Job:
        """Submit and wait: the succeeded job, or ``JobFailedError`` / ``WaitTimeoutError``.
        ``options`` are ``submit``'s."""
        started = time.monotonic()
        job = self.submit(request, wait_s=timeout_s, **options)
        if job.is_terminal:
            return finished_job(job)
        left = max(0.0, timeout_s - (time.monotonic() - started))
        return self.wait(job.job_id, timeout_s=left)

    def stream(self, job_id: str) -> Iterator[Job]:
        """The job at once and on every change, until it is final (server-sent events)."""
        call = Call("GET", f"/v1/jobs/{segment(job_id)}/events")
        response = self._send(call, stream=True)
        try:
            for event in httpx.EventSource(response):
                job = event_job(event)
                if job is not None:
                    yield job
                    if job.is_terminal:
                        return
        except httpx.TimeoutException as e:
            raise RequestTimeoutError(f"the event stream of job {job_id} went quiet") from e
        finally:
            response.close()
        raise StreamEndedError(f"the event stream of job {job_id} ended before the job did")

    def download(self, job: str | Job, path: str | PathLike[str] | None = None) -> bytes:
        """The job's image (``GET /v1/jobs/{job_id}/image``), saved to ``path`` when given. A
        job without an image is a ``ConflictError``."""
        return self._image(f"/v1/jobs/{segment(job_id_of(job))}/image", path)

    # -- batches -----------------------------------------------------------------------------

    def submit_batch(self, jobs: Iterable[Mapping[str, Any]]) -> BatchCreated:
        """Queue many jobs at once (each a whole job: ``{"request": {...}}``); one bad job
        refuses them all, naming it by its index."""
        return self._record(BatchCreated, Call("POST", "/v1/batches", json=[*map(dict, jobs)]))

    def get_batch(self, batch_id: str) -> Batch:
        return self._record(Batch, Call("GET", f"/v1/batches/{segment(batch_id)}"))

    def wait_batch(self, batch_id: str, *, timeout_s: float = DEFAULT_WAIT_S) -> Batch:
        """The batch once every job is final (its ``counts`` say how they ended; list them with
        ``iter_jobs(batch_id=...)``); ``WaitTimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for delay in polling_delays(self.config.max_poll_interval_s):
            batch = self.get_batch(batch_id)
            if batch.is_finished:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(f"batch {batch_id}", timeout_s, batch)
            time.sleep(min(delay, remaining))
        raise AssertionError  # pragma: no cover

    # -- chains ------------------------------------------------------------------------------

    def submit_chain(self, steps: Iterable[Mapping[str, Any]]) -> ChainCreated:
        """Queue jobs that each may take an earlier step's image (``{"step": n}``)."""
        body = {"steps": [dict(step) for step in steps]}
        return self._record(ChainCreated, Call("POST", "/v1/chains", json=body))

    def get_chain(self, chain_id: str) -> Chain:
        return self._record(Chain, Call("GET", f"/v1/chains/{segment(chain_id)}"))

    def wait_chain(self, chain_id: str, *, timeout_s: float = DEFAULT_WAIT_S) -> Chain:
        """The chain once it succeeded; ``ChainFailedError`` (with ``.chain``) when a step ended
        without an image, ``WaitTimeoutError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for delay in polling_delays(self.config.max_poll_interval_s):
            chain = self.get_chain(chain_id)
            if chain.is_terminal:
                return finished_chain(chain)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(f"chain {chain_id}", timeout_s, chain)
            time.sleep(min(delay, remaining))
        raise AssertionError  # pragma: no cover

    def download_chain(self, chain_id: str, path: str | PathLike[str] | None = None) -> bytes:
        """The chain's final image (its last step's), saved to ``path`` when given."""
        return self._image(f"/v1/chains/{segment(chain_id)}/image", path)

    # -- uploads, models, webhook secrets ----------------------------------------------------

    def upload(
        self, image: bytes | str | PathLike[str], *, content_type: str | None = None
    ) -> Upload:
        """Store an input image (bytes or a file); name its ``image`` (``s3://...``) in a job."""
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        headers = {"Content-Type": content_type or image_content_type(data)}
        return self._record(Upload, Call("POST", "/v1/uploads", content=data, headers=headers))

    def create_presigned_upload(self, format: Literal["png", "jpeg", "webp"]) -> Upload:
        """A URL to PUT an image to yourself (``upload_url``, with ``upload_content_type``)."""
        body = {"format": format}
        return self._record(Upload, Call("POST", "/v1/uploads/presigned", json=body))

    def models(self) -> builtins.list[Model]:
        """The models a job may name, their request fields, input images and prices."""
        response = self._send(Call("GET", "/v1/models"))
        return [Model.model_validate(m) for m in response.json()["models"]]

    def webhook_secrets(self) -> WebhookSecrets:
        """The secrets signing this tenant's webhooks (verify with each of them)."""
        return self._record(WebhookSecrets, Call("GET", "/v1/webhook-secrets"))

    # -- the wire ----------------------------------------------------------------------------

    def _record(self, kind: type[R], call: Call) -> R:
        return kind.model_validate_json(self._send(call).content)

    def _image(self, path: str, save_to: str | PathLike[str] | None) -> bytes:
        response = self._send(Call("GET", path))
        location = redirect_target(response)
        if location is not None:
            # A presigned URL: fetched without the key (S3 refuses a request with both).
            response = self._send(Call("GET", location), authorized=False)
        if save_to is not None:
            Path(save_to).write_bytes(response.content)
        return response.content

    def _send(self, call: Call, *, stream: bool = False, authorized: bool = True) -> httpx.Response:
        """Send ``call``; again after a 429 or 503 as the retry policy allows. Raises the
        answer's ``ApiError`` otherwise."""
        config = self.config
        auth = {"Authorization": f"Bearer {config.api_key}"} if authorized else {}
        timeout = config.timeout(
            call.server_wait_s, read_s=STREAM_READ_TIMEOUT_S if stream else None
        )
        for retry in count():
            request = self._http.build_request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=call.content,
                headers={**call.headers, **trace_headers(), **auth},
                timeout=timeout,
            )
            try:
                response = self._http.send(request, stream=stream, follow_redirects=False)
            except httpx.TimeoutException as e:
                raise RequestTimeoutError(f"{call.method} {call.path}: {e}") from e
            except httpx.TransportError as e:
                raise ApiConnectionError(f"{call.method} {call.path}: {e}") from e
            if response.status_code < 400:
                return response
            if stream:
                response.read()
                response.close()
            error = error_of(response)
            delay = config.retry.delay_s(response.status_code, error.retry_after_s, retry)
            if delay is None:
                raise error
            time.sleep(delay)
        raise AssertionError  # pragma: no cover (count() never ends)
