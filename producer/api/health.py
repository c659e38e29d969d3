"""``/healthz`` and ``/readyz``: async, so a probe never queues behind blocking requests. Each
names the API worker process that answered (``process``, its id): the API runs several
(``api_workers``), and a probe checks the one it reached."""

from __future__ import annotations

import os

import anyio
import anyio.to_thread
import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from imagegen.messages import JOB_QUEUES
from producer.api.state import State

__all__ = ["Health", "router"]

router = APIRouter(tags=["health"])

# A readiness probe answers within this, whatever Redis does.
READY_TIMEOUT_S = 2.0
# Probes run their Redis calls on threads of their own, never behind the request threads.
PROBE_THREADS = 4
_probe_threads: anyio.CapacityLimiter | None = None


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
    process: int = Field(
        default_factory=os.getpid, description="The id of the API process that answered"
    )


@router.get(
    "/healthz",
    operation_id="getHealth",
    response_model=Health,
    summary="The process is up",
)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="getReadiness",
    response_model=Health,
    responses={503: {"model": Health, "description": "Not ready"}},
    summary="Redis answers and workers have declared the queues",
)
async def readyz(state: State) -> JSONResponse:
    global _probe_threads  # noqa: PLW0603
    if _probe_threads is None:
        _probe_threads = anyio.CapacityLimiter(PROBE_THREADS)
    checks: dict[str, str] = {}
    with anyio.move_on_after(READY_TIMEOUT_S) as scope:
        checks = await anyio.to_thread.run_sync(
            _check, state.redis, abandon_on_cancel=True, limiter=_probe_threads
        )
    if scope.cancelled_caught:
        checks = {"redis": f"no answer within {READY_TIMEOUT_S:g} s"}
    ready = all(value == "ok" for value in checks.values())
    health = Health(status="ok" if ready else "not ready", checks=checks)
    return JSONResponse(health.model_dump(), status_code=200 if ready else 503)


def _check(client: redis.Redis) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        client.ping()
        checks["redis"] = "ok"
        for queue in JOB_QUEUES:
            declared = client.exists(f"_kombu.binding.{queue}")
            checks[f"queue {queue}"] = "ok" if declared else "not declared by any worker"
    except redis.RedisError as e:
        checks["redis"] = f"unreachable: {e}"
    return checks
