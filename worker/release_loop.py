"""The release loop: a thread in every worker process that runs the dispatcher's release for every
model with work, then sleeps until the next token is due (or until a job of this process
finishes and wakes it: then it releases that job's model only, one round trip, and leaves the
rest to the next whole pass). Every process runs one and none leads: the release script is
atomic, so two loops at once only share the work. It also reads the plain intake
(``worker.intake``) on every whole pass.

The loop survives any error of one pass: it logs it and tries again after a pause.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from typing import TYPE_CHECKING

import redis as redis_lib

from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch, Release
from worker import metrics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["ReleaseLoop"]

log = logging.getLogger("imagegen.dispatch")

# A short pause when only a claim can make room (released jobs wait for a free worker thread).
_CAPS_FULL_PAUSE_S = 0.05
_ERROR_PAUSE_S = 1.0
# Shortest sleep, so loops in many processes do not all hit Redis at the same instant.
_MIN_SLEEP_S = 0.002
# How often a loop reads which models have work (between, it releases the ones it knows).
_MODELS_REFRESH_S = 2.0


class ReleaseLoop:
    def __init__(
        self,
        dispatch: Dispatch,
        settings: Settings,
        read_intake: Callable[[], int] | None = None,
    ) -> None:
        self._dispatch = dispatch
        self._interval_s = settings.dispatch_interval_s
        self._read_intake = read_intake
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Models woken since the last pass, and whether a whole pass was asked for.
        self._woken: set[str] = set()
        self._whole = False
        self._known_models: list[str] = []
        self._models_read_at = -math.inf
        # When the loop runs next unless woken (monotonic).
        self._next_run_at = -math.inf
        # Per model, when a release sent with a finish here last found its caps full: the
        # loop's own look at it waits until the short pause after that one is over.
        self._caps_full_at: dict[str, float] = {}

    def run_once(self) -> float:
        """One pass: read the intake, release every model's due jobs; returns how long to sleep."""
        if self._read_intake is not None:
            self._read_intake()
        return self.release(self._models())

    def _models(self) -> list[str]:
        """The models with work, as last read (again every ``_MODELS_REFRESH_S``): a model
        new to this process meanwhile was released by its submission, and is found then."""
        now = time.monotonic()
        if now >= self._models_read_at + _MODELS_REFRESH_S:
            self._known_models = self._dispatch.models_with_work()
            self._models_read_at = now
        return self._known_models

    def release(self, model_ids: Iterable[str]) -> float:
        """Release these models' due jobs; returns how long to sleep. A model whose caps a
        finish here found full within the short pause is not looked at again before the pause
        ends (nothing but a claim could have made room since, as for a look of the loop's own)."""
        sleep_s = self._interval_s
        now = time.monotonic()
        for model_id in model_ids:
            with self._lock:
                full_at = self._caps_full_at.get(model_id, -math.inf)
            if now < full_at + _CAPS_FULL_PAUSE_S:
                # Looked at when this pass's sleep ends.
                with self._lock:
                    self._woken.add(model_id)
                sleep_s = min(sleep_s, full_at + _CAPS_FULL_PAUSE_S - now)
                continue
            release = self._dispatch.release(model_id)
            if release.released:
                metrics.JOBS_RELEASED.labels(model_id).inc(release.released)
            if release.next_s is None:
                continue
            wait_s = _CAPS_FULL_PAUSE_S if math.isinf(release.next_s) else release.next_s
            sleep_s = min(sleep_s, wait_s)
        return max(_MIN_SLEEP_S, sleep_s)

    def released(self, model_id: str, release: Release) -> None:
        """A release of ``model_id`` ran elsewhere (sent with a job's finish): count it, and
        wake the loop as a release run here would have: at once when it says more can go (or
        soon), within the short pause when only a claim can make room (unless the loop runs
        that soon anyway: it looks again when that pause is over), not at all when nothing
        waits."""
        if release.released:
            metrics.JOBS_RELEASED.labels(model_id).inc(release.released)
        if release.next_s is None:
            return
        if math.isinf(release.next_s):
            with self._lock:
                self._caps_full_at[model_id] = time.monotonic()
        if not math.isinf(release.next_s):
            self.wake(model_id)
        elif self._next_run_at > time.monotonic() + _CAPS_FULL_PAUSE_S:
            self._woken_for(model_id)

    def wake(self, model_id: str | None = None) -> None:
        """Release now: ``model_id``'s jobs (one of its jobs finished: its slot, or a retry,
        may be ready to go), or, without one, run a whole pass."""
        with self._lock:
            if model_id is None:
                self._caps_full_at.clear()
            else:
                self._caps_full_at.pop(model_id, None)
        self._woken_for(model_id)

    def _woken_for(self, model_id: str | None) -> None:
        with self._lock:
            if model_id is None:
                self._whole = True
            else:
                self._woken.add(model_id)
        self._wake.set()

    def _take_woken(self) -> tuple[set[str], bool]:
        with self._lock:
            woken, whole = self._woken, self._whole
            self._woken, self._whole = set(), False
        return woken, whole

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="release-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s * 2 + 1)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        whole_due = 0.0  # when the next whole pass (the intake, every model) is due
        while not self._stop.is_set():
            try:
                woken, whole = self._take_woken()
                now = time.monotonic()
                if whole or not woken or now >= whole_due:
                    sleep_s = self.run_once()
                    whole_due = now + sleep_s
                else:
                    # Woken by finished jobs: only their models, one round trip each.
                    sleep_s = min(self.release(sorted(woken)), max(0.0, whole_due - now))
            except redis_lib.RedisError:
                log.warning("release loop cannot reach Redis; trying again", exc_info=True)
                sleep_s = _ERROR_PAUSE_S * random.uniform(0.5, 1.5)
            except Exception:
                log.exception("release pass failed; trying again")
                sleep_s = _ERROR_PAUSE_S
            self._next_run_at = time.monotonic() + sleep_s
            self._wake.wait(sleep_s)
            self._wake.clear()
