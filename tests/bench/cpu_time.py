"""What the kernel's scheduler says about a group of processes (Linux ``schedstat``): the CPU
time their threads ran, and the time they were ready to run but waited for a CPU. The second
is the share of a latency that other work on the machine caused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["SchedTimes", "group_sched_times"]

PROC = Path("/proc")


@dataclass(frozen=True)
class SchedTimes:
    ran_s: float
    waited_s: float

    def __sub__(self, earlier: SchedTimes) -> SchedTimes:
        return SchedTimes(self.ran_s - earlier.ran_s, self.waited_s - earlier.waited_s)


def _group_of(stat: str) -> int:
    # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the last ")".
    return int(stat.rpartition(")")[2].split()[2])


def group_sched_times(group: int) -> SchedTimes:
    """Summed over every thread of every process in process group ``group`` now (a thread that
    ended meanwhile is no longer counted)."""
    ran_ns = waited_ns = 0
    for process in PROC.iterdir():
        if not process.name.isdigit():
            continue
        try:
            if _group_of((process / "stat").read_text()) != group:
                continue
            for task in (process / "task").iterdir():
                ran, waited, _ = (task / "schedstat").read_text().split()
                ran_ns += int(ran)
                waited_ns += int(waited)
        except (OSError, ValueError):  # gone meanwhile
            continue
    return SchedTimes(ran_ns / 1e9, waited_ns / 1e9)
