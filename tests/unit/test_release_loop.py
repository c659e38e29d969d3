"""The release loop after a finish that released in its own round trip: woken only when a
release run here would still have work."""

from __future__ import annotations

import math
import threading
import time
from typing import Any, cast

import pytest

from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch, Release
from worker.release_loop import _CAPS_FULL_PAUSE_S, ReleaseLoop

MODEL = "stability.stable-image-core-v1:0"


class CountingDispatch:
    """Counts the releases the loop runs; nothing ever waits."""

    def __init__(self) -> None:
        self.released: list[str] = []
        self.ran = threading.Event()

    def models_with_work(self) -> list[str]:
        return []

    def release(self, model_id: str) -> Release:
        self.released.append(model_id)
        self.ran.set()
        return Release(0, None, 0)


@pytest.fixture
def loop(settings: Settings) -> Any:
    dispatch = CountingDispatch()
    slow = settings.model_copy(update={"dispatch_interval_s": 30.0})
    release_loop = ReleaseLoop(cast("Dispatch", dispatch), slow)
    release_loop.start()
    deadline = time.monotonic() + 5
    while release_loop._next_run_at < time.monotonic() + 10:  # its first pass, then its sleep
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield release_loop, dispatch
    release_loop.stop()


@pytest.mark.parametrize(
    ("next_s", "runs"),
    [
        (None, False),  # nothing waits: nothing to release
        (0.0, True),  # more can go now
        (0.5, True),  # a token or a retry is due soon
        (math.inf, True),  # only a claim can make room: the loop looks again shortly
    ],
)
def test_a_release_sent_with_a_finish_wakes_the_loop_only_when_work_is_left(
    loop: Any, next_s: float | None, runs: bool
) -> None:
    release_loop, dispatch = loop
    release_loop.released(MODEL, Release(1, next_s, 1))
    # A wake comes within milliseconds; a loop that stays asleep is given half a second.
    assert dispatch.ran.wait(10 if runs else 0.5) is runs
    assert dispatch.released == ([MODEL] if runs else [])


class FrozenClock:
    """``time.monotonic`` for the loop, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_the_loop_does_not_look_again_at_caps_a_finish_here_just_found_full(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finish's release found the model's caps full: the loop's own look waits until the
    short pause after it is over (only a claim could make room meanwhile); a job that ended
    without a release of its own (a retry, a lost lease) has the loop look at once."""
    clock = FrozenClock()
    monkeypatch.setattr("worker.release_loop.time", clock)
    dispatch = CountingDispatch()
    release_loop = ReleaseLoop(cast("Dispatch", dispatch), settings)
    release_loop.released(MODEL, Release(1, math.inf, 1))
    clock.now += _CAPS_FULL_PAUSE_S / 2
    assert release_loop.release([MODEL]) == pytest.approx(_CAPS_FULL_PAUSE_S / 2)
    assert dispatch.released == []
    clock.now += _CAPS_FULL_PAUSE_S / 2
    release_loop.release([MODEL])
    assert dispatch.released == [MODEL]
    release_loop.released(MODEL, Release(1, math.inf, 1))
    release_loop.wake(MODEL)
    release_loop.release([MODEL])
    assert dispatch.released == [MODEL, MODEL]
