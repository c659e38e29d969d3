"""The console's live updates: one server-sent event stream per browser session.

The stream carries the tenant's events channel (``{"job_id", "status", "place"}`` as the Lua
transitions publish them, and new jobs as the submission announces them): no job record is read
per event; a page that shows the job asks for its row or its page itself.

A browser's tabs share one stream (``static/live.js``: the tab holding a Web Lock opens it and
passes its events to the others over a BroadcastChannel). On the server, a session holds one
stream slot however many streams it opens: a newer stream of the same session takes over the
slot, and the older one ends with ``event: end`` / ``superseded`` (a leader tab that went away
leaves a stream behind until its connection is noticed closed). The stream checks its session
every ``SESSION_RECHECK_S`` however busy, and ends with ``event: end`` / ``session`` when it is
over (logged out, expired, its key revoked), so the page says so instead of reconnecting.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from producer.api.limits import Held, HeldLimits
from producer.api.problems import ProblemError
from producer.api.state import ApiState, State
from producer.console.auth import COOKIE, TenantLogin, sessions

__all__ = ["SessionStreams", "router"]

router = APIRouter(include_in_schema=False)

EVENTS_HEARTBEAT_S = 15.0
# An event stream checks its session this often, busy or not, and ends with it.
SESSION_RECHECK_S = 2.0
RETRY_MS = 3000
STREAM_RETRY_AFTER_S = 10
_EVENT_FIELDS = ("job_id", "status", "place")


@dataclass
class _Slot:
    tenant: str
    generation: int
    streams: int


class SessionStreams:
    """Which stream of each console session is current, and the one stream slot
    (``Held.STREAM`` of its tenant) each session holds while any of its streams is open."""

    def __init__(self, held: HeldLimits) -> None:
        self._held = held
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def open(self, session: str, tenant: str) -> int | None:
        """A new stream of ``session``: its generation (it supersedes the session's older
        streams), or None when the tenant or the process has no slot for a new session."""
        with self._lock:
            slot = self._slots.get(session)
            if slot is None:
                if not self._held.take(Held.STREAM, tenant):
                    return None
                slot = self._slots[session] = _Slot(tenant, 0, 0)
            slot.generation += 1
            slot.streams += 1
            return slot.generation

    def is_current(self, session: str, generation: int) -> bool:
        with self._lock:
            slot = self._slots.get(session)
            return slot is not None and slot.generation == generation

    def close(self, session: str) -> None:
        """One stream of ``session`` ended; the last one gives the slot back."""
        with self._lock:
            slot = self._slots[session]
            slot.streams -= 1
            if slot.streams == 0:
                del self._slots[session]
                self._held.give_back(Held.STREAM, slot.tenant)

    def open_sessions(self) -> int:
        with self._lock:
            return len(self._slots)


def session_streams(request: Request) -> SessionStreams:
    streams: SessionStreams = request.app.state.console_streams
    return streams


@router.get("/console/session")
def session_alive(_: TenantLogin) -> Response:
    """204 while the browser's tenant session lasts (else the login redirect): how a page
    whose stream failed tells an ended session from a passing error."""
    return Response(status_code=204, headers={"Cache-Control": "no-store"})


@router.get("/console/events")
def events(request: Request, state: State, session: TenantLogin) -> Response:
    """Server-sent events: ``event: job`` with ``{"job_id", "status", "place"}`` whenever one of
    the tenant's jobs is created, starts or ends; ``event: end`` (``session`` or
    ``superseded``) when the stream ends for good."""
    assert session.tenant is not None  # a tenant session always names its tenant
    token = request.cookies.get(COOKIE, "")
    key = hashlib.sha256(token.encode()).hexdigest()
    streams = session_streams(request)
    generation = streams.open(key, session.tenant)
    if generation is None:
        raise ProblemError(
            429,
            "Too many event streams",
            "this tenant has as many live consoles open on this server as it may",
            headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
        )
    return StreamingResponse(
        _stream(state, streams, session.tenant, token, key=key, generation=generation),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(data: str) -> str | None:
    """The browser's copy of one channel message: its known fields only, or None."""
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("job_id"), str):
        return None
    fields = {name: str(message.get(name) or "") for name in _EVENT_FIELDS}
    return f"event: job\ndata: {json.dumps(fields)}\n\n"


async def _stream(
    state: ApiState,
    streams: SessionStreams,
    tenant: str,
    token: str,
    *,
    key: str,
    generation: int,
) -> AsyncIterator[str]:
    """The tenant's events until the session ends or a newer stream of it takes over."""
    try:
        channel = await anyio.to_thread.run_sync(state.client.reads.subscribe_tenant, tenant)
        try:
            yield f"retry: {RETRY_MS}\n\n"
            session_checked = quiet_since = time.monotonic()
            while True:
                if not streams.is_current(key, generation):
                    yield "event: end\ndata: superseded\n\n"
                    return
                if time.monotonic() - session_checked >= SESSION_RECHECK_S:
                    session_checked = time.monotonic()
                    if await anyio.to_thread.run_sync(sessions(state).get, token) is None:
                        yield "event: end\ndata: session\n\n"
                        return
                message = await anyio.to_thread.run_sync(channel.next, SESSION_RECHECK_S)
                if message is None:
                    if time.monotonic() - quiet_since >= EVENTS_HEARTBEAT_S:
                        quiet_since = time.monotonic()
                        yield ": heartbeat\n\n"
                    continue
                event = _event(str(message["data"]))
                if event is not None:
                    yield event
        finally:
            await anyio.to_thread.run_sync(channel.close)
    finally:
        streams.close(key)
