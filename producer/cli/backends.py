"""Where the job commands send their work: Redis directly (a trusted backend's ``Client``, the
default) or the HTTP API with an API key (``--api URL``, ``imagegen_client``).

Both answer with records the commands print the same way: a Redis record and an API job share
the fields a person reads (``JobView``), and each prints its own full JSON.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from imagegen.binding import store_upload
from imagegen.errors import FieldError, InvalidRequestError, JobNotFoundError
from imagegen.inputs import UnusableImageError
from imagegen.records import JobRecord, JobStatus
from imagegen.store.jobs import CancelOutcome
from imagegen_client import ApiError, ImagegenClient, NotFoundError
from producer.client import Client

__all__ = ["ApiJobs", "ChainView", "JobView", "Jobs", "RedisJobs", "StepView"]

Kind = Literal["job", "batch", "chain"]
CancelResult = Literal["canceled", "cancel requested"]
_PAGE = 50


class JobView(Protocol):
    """What the commands read of a job, whichever way it was fetched."""

    @property
    def job_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def is_terminal(self) -> bool: ...
    @property
    def request(self) -> Any: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def queue_position(self) -> int | None: ...
    @property
    def estimated_start_at(self) -> datetime | None: ...
    @property
    def seed(self) -> int | None: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def s3_uri(self) -> str | None: ...
    @property
    def s3_key(self) -> str | None: ...
    @property
    def cached(self) -> bool: ...
    @property
    def cache_source_job_id(self) -> str | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def error_code(self) -> str | None: ...
    @property
    def error_message(self) -> str | None: ...
    def model_dump_json(self) -> str: ...


class StepView(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def error_code(self) -> str | None: ...


class ChainView(Protocol):
    @property
    def chain_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def steps(self) -> Sequence[StepView]: ...
    def model_dump_json(self) -> str: ...


class Jobs(Protocol):
    """What the job commands need of the service."""

    @property
    def default_model_id(self) -> str | None:
        """The model a job without one runs on, where this side knows it."""
        ...

    def submit(
        self, job: Mapping[str, Any], *, tenant: str | None, idempotency_key: str | None
    ) -> JobView: ...
    def get(self, job_id: str) -> JobView: ...
    def cancel(self, job_id: str) -> CancelResult: ...
    def list(
        self, *, tenant: str | None, status: str | None, batch_id: str | None, limit: int
    ) -> builtins.list[JobView]: ...
    def submit_batch(
        self, jobs: Sequence[Mapping[str, Any]], *, tenant: str | None
    ) -> tuple[str, builtins.list[str]]: ...
    def batch_counts(self, batch_id: str) -> dict[str, int]: ...
    def batch_jobs(self, batch_id: str) -> builtins.list[JobView]: ...
    def submit_chain(
        self, steps: Sequence[Mapping[str, Any]], *, tenant: str | None
    ) -> tuple[str, builtins.list[str]]: ...
    def chain(self, chain_id: str) -> ChainView: ...
    def upload(self, path: Path, *, tenant: str | None) -> dict[str, Any]: ...
    def download(self, job: JobView, path: Path) -> Path: ...
    def download_chain(self, chain: ChainView, path: Path) -> Path: ...
    def models(self) -> builtins.list[dict[str, Any]]: ...
    def kind_of(self, some_id: str) -> Kind: ...


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UnusableImageError(f"cannot be read ({e.strerror or e})") from e


class RedisJobs:
    """The jobs through Redis and S3, as a trusted backend reaches them."""

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def default_model_id(self) -> str | None:
        return self.client.settings.model_id

    def submit(
        self, job: Mapping[str, Any], *, tenant: str | None, idempotency_key: str | None
    ) -> JobView:
        return self.client.submit(dict(job), tenant=tenant, idempotency_key=idempotency_key)

    def get(self, job_id: str) -> JobView:
        return self.client.get(job_id)

    def cancel(self, job_id: str) -> CancelResult:
        outcome = self.client.cancel(job_id)
        if outcome is CancelOutcome.TERMINAL:
            msg = f"job {job_id} is already {self.client.get(job_id).status.value}"
            raise ValueError(msg)
        return "canceled" if outcome is CancelOutcome.CANCELED else "cancel requested"

    def list(
        self, *, tenant: str | None, status: str | None, batch_id: str | None, limit: int
    ) -> builtins.list[JobView]:
        page = self.client.list_jobs(
            tenant=tenant,
            batch_id=batch_id,
            limit=limit,
            status=JobStatus(status) if status else None,
        )
        return builtins.list(page.jobs)

    def submit_batch(
        self, jobs: Sequence[Mapping[str, Any]], *, tenant: str | None
    ) -> tuple[str, builtins.list[str]]:
        batch_id, records = self.client.submit_batch(jobs, tenant=tenant)
        return batch_id, [r.job_id for r in records]

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return self.client.batch(batch_id).counts

    def batch_jobs(self, batch_id: str) -> builtins.list[JobView]:
        job_ids = self.client.batch(batch_id).job_ids
        return [r for r in self.client.get_many(job_ids) if r is not None]

    def submit_chain(
        self, steps: Sequence[Mapping[str, Any]], *, tenant: str | None
    ) -> tuple[str, builtins.list[str]]:
        chain_id, records = self.client.submit_chain(steps, tenant=tenant)
        return chain_id, [r.job_id for r in records]

    def chain(self, chain_id: str) -> ChainView:
        return self.client.chain(chain_id)

    def upload(self, path: Path, *, tenant: str | None) -> dict[str, Any]:
        stored = store_upload(
            self.client.s3(), self.client.settings, tenant, _read(path), content_type=None
        )
        facts = stored.facts
        return {
            "image": stored.uri,
            "s3_bucket": stored.bucket,
            "s3_key": stored.key,
            "format": facts.format,
            "width": facts.width,
            "height": facts.height,
            "bytes": facts.bytes,
        }

    def download(self, job: JobView, path: Path) -> Path:
        if not isinstance(job, JobRecord):  # pragma: no cover (every record here is one)
            job = self.client.get(job.job_id)
        return self.client.download(job, path)

    def download_chain(self, chain: ChainView, path: Path) -> Path:
        return self.download(self.client.get(chain.steps[-1].job_id), path)

    def models(self) -> builtins.list[dict[str, Any]]:
        return self.client.models()

    def kind_of(self, some_id: str) -> Kind:
        try:
            self.client.reads.get(some_id)
        except JobNotFoundError:
            pass
        else:
            return "job"
        if self.client.reads.batch(some_id) is None:
            raise JobNotFoundError(some_id)
        try:
            self.client.chain(some_id)
        except JobNotFoundError:
            return "batch"
        return "chain"


class ApiJobs:
    """The jobs through the HTTP API, with the API key's tenant."""

    def __init__(self, client: ImagegenClient) -> None:
        self.client = client

    @property
    def default_model_id(self) -> str | None:
        return None  # the API's own setting: not known here

    @staticmethod
    def _no_tenant(tenant: str | None) -> None:
        if tenant is not None:
            msg = "with --api the API key's tenant is used; leave --tenant out"
            raise InvalidRequestError([FieldError("--tenant", msg)])

    def submit(
        self, job: Mapping[str, Any], *, tenant: str | None, idempotency_key: str | None
    ) -> JobView:
        self._no_tenant(tenant)
        return self.client.submit(job, idempotency_key=idempotency_key)

    def get(self, job_id: str) -> JobView:
        try:
            return self.client.get(job_id)
        except NotFoundError as e:
            raise JobNotFoundError(job_id) from e

    def cancel(self, job_id: str) -> CancelResult:
        try:
            job = self.client.cancel(job_id)
        except NotFoundError as e:
            raise JobNotFoundError(job_id) from e
        return "canceled" if job.status == "canceled" else "cancel requested"

    def list(
        self, *, tenant: str | None, status: str | None, batch_id: str | None, limit: int
    ) -> builtins.list[JobView]:
        self._no_tenant(tenant)
        return builtins.list(self.client.list(status=status, batch_id=batch_id, limit=limit).jobs)

    def submit_batch(
        self, jobs: Sequence[Mapping[str, Any]], *, tenant: str | None
    ) -> tuple[str, builtins.list[str]]:
        self._no_tenant(tenant)
        created = self.client.submit_batch(jobs)
        return created.batch_id, created.job_ids

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return self.client.get_batch(batch_id).counts

    def batch_jobs(self, batch_id: str) -> builtins.list[JobView]:
        return builtins.list(self.client.iter_jobs(batch_id=batch_id, page_size=_PAGE))

    def submit_chain(
        self, steps: Sequence[Mapping[str, Any]], *, tenant: str | None
    ) -> tuple[str, builtins.list[str]]:
        self._no_tenant(tenant)
        created = self.client.submit_chain(steps)
        return created.chain_id, created.job_ids

    def chain(self, chain_id: str) -> ChainView:
        return self.client.get_chain(chain_id)

    def upload(self, path: Path, *, tenant: str | None) -> dict[str, Any]:
        self._no_tenant(tenant)
        data = _read(path)
        try:
            uploaded = self.client.upload(data)
        except ValueError as e:  # not an image the client can name
            raise UnusableImageError(str(e)) from e
        except ApiError as e:
            if e.status in (413, 422):
                raise UnusableImageError(e.problem.detail) from e
            raise
        return uploaded.model_dump(mode="json", exclude_none=True)

    def download(self, job: JobView, path: Path) -> Path:
        self.client.download(job.job_id, path)
        return path

    def download_chain(self, chain: ChainView, path: Path) -> Path:
        self.client.download_chain(chain.chain_id, path)
        return path

    def models(self) -> builtins.list[dict[str, Any]]:
        return [m.model_dump(mode="json") for m in self.client.models()]

    def kind_of(self, some_id: str) -> Kind:
        kinds: tuple[tuple[Kind, Any], ...] = (
            ("job", self.client.get),
            ("chain", self.client.get_chain),
            ("batch", self.client.get_batch),
        )
        for kind, read in kinds:
            try:
                read(some_id)
            except NotFoundError:
                continue
            return kind
        raise JobNotFoundError(some_id)
