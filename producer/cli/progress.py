"""Following a job, a batch or a chain from the shell: a progress bar on stderr with counts,
elapsed time and an ETA.

On a terminal the bar is redrawn in place; otherwise (a log, a pipe) a line is printed each time
the counts or the state change, so the output stays short. The ETA of a batch or a chain is the
time the finished ones took, per item, times the ones left; a single waiting job's is its
estimated start.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from imagegen.errors import JobTimeoutError
from producer.cli.backends import ChainView, Jobs, JobView

__all__ = ["ProgressBar", "follow_batch", "follow_chain", "follow_job", "render"]

BAR_WIDTH = 30
POLL_S = 0.5
SUCCEEDED = "succeeded"
OPEN_STATUSES = ("queued", "running")


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(
    done: int,
    total: int,
    failed: int,
    elapsed_s: float,
    *,
    note: str = "",
    eta_s: float | None = None,
) -> str:
    """One line: ``[####------] 3/10 done, 1 without an image, 0:12 elapsed, ETA 0:28``."""
    filled = BAR_WIDTH * done // max(total, 1)
    parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total} done"]
    if failed:
        parts.append(f"{failed} without an image")
    if note:
        parts.append(note)
    parts.append(f"{_clock(elapsed_s)} elapsed")
    if eta_s is None and 0 < done < total:
        eta_s = elapsed_s / done * (total - done)
    if eta_s is not None and done < total:
        parts.append(f"ETA {_clock(eta_s)}")
    return ", ".join(parts)


@dataclass
class ProgressBar:
    """Draws ``render``'s line on ``stream``: in place on a terminal, else on each change."""

    total: int
    stream: TextIO = sys.stderr
    interactive: bool | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.interactive is None:
            self.interactive = self.stream.isatty()
        self._started = self.clock()
        self._last_state: tuple[int, int, str] | None = None
        self._width = 0

    def update(
        self, done: int, failed: int = 0, *, note: str = "", eta_s: float | None = None
    ) -> None:
        line = render(
            done, self.total, failed, self.clock() - self._started, note=note, eta_s=eta_s
        )
        if self.interactive:
            padding = " " * max(0, self._width - len(line))
            self._width = len(line)
            self.stream.write(f"\r{line}{padding}")
            self.stream.flush()
            return
        state = (done, failed, note)
        if state != self._last_state:
            self._last_state = state
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.interactive and self._width:
            print(file=self.stream, flush=True)


def _job_note(job: JobView) -> tuple[str, float | None]:
    """What a job is doing, and when it should start while it waits."""
    if job.status != "queued":
        return str(job.status), None
    note = "queued" if job.queue_position is None else f"queued, position {job.queue_position}"
    start = job.estimated_start_at
    eta_s = (start - datetime.now(UTC)).total_seconds() if start is not None else None
    return note, max(0.0, eta_s) if eta_s is not None else None


def follow_job(jobs: Jobs, job_id: str, timeout_s: float, bar: ProgressBar) -> JobView:
    """The job once it is final; ``JobTimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            job = jobs.get(job_id)
            failed = int(job.is_terminal and job.status != SUCCEEDED)
            note, eta_s = _job_note(job)
            bar.update(int(job.is_terminal), failed, note=note, eta_s=eta_s)
            if job.is_terminal:
                return job
            if time.monotonic() > deadline:
                raise JobTimeoutError(job_id, timeout_s, str(job.status))
            time.sleep(POLL_S)
    finally:
        bar.close()


def follow_batch(jobs: Jobs, batch_id: str, timeout_s: float, bar: ProgressBar) -> dict[str, int]:
    """The batch's counts by status once every job is final, or as they are at ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            counts = jobs.batch_counts(batch_id)
            done = sum(n for status, n in counts.items() if status not in OPEN_STATUSES)
            failed = done - counts.get(SUCCEEDED, 0)
            running = counts.get("running", 0)
            bar.update(done, failed, note=f"{running} running" if running else "")
            if done >= bar.total or time.monotonic() > deadline:
                return counts
            time.sleep(POLL_S)
    finally:
        bar.close()


def follow_chain(jobs: Jobs, chain_id: str, timeout_s: float, bar: ProgressBar) -> ChainView:
    """The chain once it succeeded or failed; ``JobTimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            chain = jobs.chain(chain_id)
            bar.total = len(chain.steps)
            done = sum(step.status == SUCCEEDED for step in chain.steps)
            current = next((s for s in chain.steps if s.status != SUCCEEDED), None)
            note = f"step {done}: {current.model_id} {current.status}" if current else ""
            failed = int(chain.status == "failed")
            bar.update(done, failed, note=note)
            if chain.status in ("succeeded", "failed"):
                return chain
            if time.monotonic() > deadline:
                raise JobTimeoutError(chain_id, timeout_s, chain.status)
            time.sleep(POLL_S)
    finally:
        bar.close()
