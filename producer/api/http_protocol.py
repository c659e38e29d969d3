"""The API's HTTP/1.1 protocol: uvicorn's h11 protocol with the bounds it lacks against slow
and oversized clients.

uvicorn bounds an idle keep-alive connection (``--timeout-keep-alive``) and, with h11, the bytes
it buffers of an incomplete request head (``--h11-max-incomplete-event-size``), but not the time
a client may take to send that head, nor a body that stops arriving: a few hundred half-sent
requests would stay open for ever. Here:

- a request's line and headers must arrive within ``api_header_timeout_s`` of its first byte (or
  of the connection, for the first one); after that the client gets 408 and the connection is
  closed;
- a body may not pause longer than that (unless we stopped reading it because the app is busy);
- a head over ``--h11-max-incomplete-event-size`` bytes is answered 431 and the connection is
  closed, without reading the rest.

``imagegen api`` and the local stack run uvicorn with ``--http`` naming this class.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from imagegen.settings import get_settings

__all__ = ["BoundedH11Protocol"]

DEFAULT_MAX_HEAD_BYTES = 16 * 1024
_HEAD_END = re.compile(rb"\n\r?\n")


def _plain_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedH11Protocol(H11Protocol):
    """h11 with a deadline on each request's head, a bound on body pauses, and 431 for a head
    over the size bound."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.read_timeout_s = get_settings().api_header_timeout_s
        self.max_head_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            if self._head_too_long(data):
                self._answer_and_close(431, "Request Header Fields Too Large", "headers too large")
                return
            if self._read_deadline is None:
                self._arm_read_deadline()  # the head's deadline runs from its first byte
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm_read_deadline()  # each piece of a body restarts the pause bound
        elif state is not h11.IDLE:
            self._disarm_read_deadline()

    def _head_too_long(self, data: bytes) -> bool:
        """Whether the head being received (what h11 holds plus ``data``) is over the bound
        with no end in sight."""
        pending, _ = self.conn.trailing_data
        if len(pending) + len(data) <= self.max_head_bytes:
            return False
        head = pending + data
        return _HEAD_END.search(head, 0, self.max_head_bytes + 4) is None

    def _arm_read_deadline(self) -> None:
        self._disarm_read_deadline()
        self._read_deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self.flow.read_paused:
            self._arm_read_deadline()  # we stopped reading, not the client
            return
        if state is h11.IDLE and self.conn.our_state is h11.IDLE:
            pending, _ = self.conn.trailing_data
            if pending:  # a request began and stalled; an idle connection just closes
                self._answer_and_close(408, "Request Timeout", "request not sent in time")
                return
        if state in {h11.IDLE, h11.SEND_BODY}:
            self.transport.close()

    def _answer_and_close(self, status: int, reason: str, message: str) -> None:
        self._disarm_read_deadline()
        self._unset_keepalive_if_required()
        self.transport.write(_plain_response(status, reason, message))
        self.transport.close()
