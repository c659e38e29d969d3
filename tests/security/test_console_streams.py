"""Attack: keep reading a tenant's live console events after its API key was revoked (or after
logging out elsewhere). The stream used to re-check its session only when idle, which a busy
fleet never is: it kept delivering. Now it ends within seconds, while events keep flowing, and
says why (``event: end`` / ``session``), so the page stops instead of reconnecting for ever.
And the other way round: the streams of one session (its tabs) never exhaust the tenant's
streams; a newer one takes the session's one slot over."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from producer.client import Client
from tests.security.console_visitor import ConsoleVisitor

pytestmark = pytest.mark.integration

ENDS_WITHIN_S = 6.0  # the stream re-checks its session every 2 s


class Follower:
    """Reads /console/events on a thread: when each job event came, and when the stream
    ended."""

    def __init__(self, visitor: ConsoleVisitor) -> None:
        self.events: list[float] = []
        self.ended_at: float | None = None
        self.status: int | None = None
        self.end_reason: str | None = None
        self.transport_error: httpx.TransportError | None = None
        self._thread = threading.Thread(target=self._read, args=(visitor,), daemon=True)
        self._thread.start()

    def _read(self, visitor: ConsoleVisitor) -> None:
        try:
            with visitor.http.stream(
                "GET", "/console/events", timeout=httpx.Timeout(60, read=60)
            ) as response:
                self.status = response.status_code
                assert response.status_code == 200
                ending = False
                for line in response.iter_lines():
                    if line.startswith("event: job"):
                        self.events.append(time.monotonic())
                    elif line == "event: end":
                        ending = True
                    elif ending and line.startswith("data: "):
                        self.end_reason = line.removeprefix("data: ")
                        ending = False
        except httpx.TransportError as error:
            # The test closed the visitor under an open stream; the checks read `end_reason`.
            self.transport_error = error
        finally:
            self.ended_at = time.monotonic()

    def wait_for_events(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"only {len(self.events)} events"
            assert self.ended_at is None, "the stream ended early"
            time.sleep(0.05)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


@pytest.fixture
def busy_tenant(secure_stack: Stack) -> Iterator[tuple[Client, Callable[[str], None]]]:
    """A client, and a way to keep a tenant's jobs flowing (one every 0.2 s) until the test
    ends."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    with Client(secure_stack.settings()) as client:

        def keep_busy(tenant: str) -> None:
            def submit() -> None:
                while not stop.wait(0.2):
                    client.submit("keep the stream busy", tenant=tenant)

            thread = threading.Thread(target=submit, daemon=True)
            thread.start()
            threads.append(thread)

        yield client, keep_busy
        stop.set()
        for thread in threads:
            thread.join(10)


def test_a_revoked_keys_stream_ends_within_seconds_while_busy(
    secure_stack: Stack, busy_tenant: tuple[Client, Callable[[str], None]]
) -> None:
    client, keep_busy = busy_tenant
    record, key = client.api_keys.create("streamer")
    visitor = ConsoleVisitor(secure_stack.urls["api"])
    try:
        visitor.log_in(key)
        follower = Follower(visitor)
        keep_busy("streamer")
        follower.wait_for_events(5)
        client.api_keys.revoke(record.key_id)
        revoked_at = time.monotonic()
        follower.join(ENDS_WITHIN_S + 5)
        assert follower.ended_at is not None, "the stream is still open"
        assert follower.ended_at - revoked_at < ENDS_WITHIN_S
        assert follower.end_reason == "session"
        # Busy to the end: events kept coming until shortly before the stream ended.
        assert follower.events[-1] > revoked_at - 2
    finally:
        visitor.close()


def test_a_streams_session_ending_elsewhere_ends_it(
    secure_stack: Stack, busy_tenant: tuple[Client, Callable[[str], None]]
) -> None:
    client, keep_busy = busy_tenant
    _, key = client.api_keys.create("streamer2")
    visitor = ConsoleVisitor(secure_stack.urls["api"])
    try:
        visitor.log_in(key)
        follower = Follower(visitor)
        keep_busy("streamer2")
        follower.wait_for_events(3)
        assert visitor.post("/console/logout").status_code == 303  # another tab logs out
        logged_out_at = time.monotonic()
        follower.join(ENDS_WITHIN_S + 5)
        assert follower.ended_at is not None, "the stream is still open"
        assert follower.ended_at - logged_out_at < ENDS_WITHIN_S
        assert follower.end_reason == "session"
    finally:
        visitor.close()


def test_one_sessions_streams_hold_one_slot_and_the_newest_takes_it(
    secure_stack: Stack, busy_tenant: tuple[Client, Callable[[str], None]]
) -> None:
    """Six streams of one browser session (more than the tenant's four per process) all open;
    each newer one takes the session's slot, and the one before ends as superseded."""
    client, keep_busy = busy_tenant
    _, key = client.api_keys.create("many-tabs")
    visitor = ConsoleVisitor(secure_stack.urls["api"])
    try:
        visitor.log_in(key)
        keep_busy("many-tabs")
        followers: list[Follower] = []
        for _ in range(6):
            followers.append(Follower(visitor))
            followers[-1].wait_for_events(2)
        for older in followers[:-1]:
            older.join(ENDS_WITHIN_S)
            assert older.status == 200
            assert older.end_reason == "superseded"
        newest = followers[-1]
        assert newest.ended_at is None
        count = len(newest.events)
        newest.wait_for_events(count + 3)
    finally:
        visitor.close()
