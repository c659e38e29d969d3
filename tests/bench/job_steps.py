"""Redis time of each step of a job's life, in the Lua scripts that make it, on a quiet private
Redis: what the whole-job benchmark (``tests.bench.whole_job``) spends in scripts, step by step,
without the rest of the stack around it. A quick loop (seconds) for work on a job's Redis cost.

    python -m tests.bench.job_steps [--rounds 12] [--jobs 64] [--redis-cpu N]

Each round: ``jobs`` jobs of four tenants, each with a webhook, are submitted in one
transaction, released in one run (no quota), claimed one by one with the call marked (as a
worker does), finished ``succeeded`` with their image bought and their first webhook delivery
claimed to be sent at once (taking a slot of its endpoint), and that delivery's outcome recorded.
Per step: the scripts' time (``INFO commandstats``, ``fcall`` usec, which includes the commands
each script runs), the commands (those the scripts run and those sent beside them) and Redis's
CPU time for the whole step (``INFO cpu``: with the commands sent outside scripts, reading
requests and writing replies), per job, the median over the rounds after the first two.
``--redis-cpu N`` runs Redis on CPU N only (``taskset``); run this driver on another
(``taskset -c 0``) and Redis has a core to itself.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagegen.contract import JobSpec
from imagegen.records import JobStatus, NewJob
from imagegen.settings import Settings
from imagegen.store.deliveries import Deliveries, DeliveryClaim
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import Finished, JobStore
from tests.bench.whole_job import _PrivateRedis, _Reading

MODEL = "stability.stable-image-core-v1:1"
TENANTS = 4
WARMUP_ROUNDS = 2
STEPS = ("submit", "release", "claim", "finish", "delivery")
ENDPOINT = "hooks.example.com"
OWNER = "bench"
NOT_IN_SCRIPTS = frozenset({"info", "multi", "exec", "function|list", "function|load"})


@dataclass(frozen=True)
class StepCost:
    script_us: float  # the scripts' time (with the commands they ran)
    commands: float  # the commands run: by the scripts, and beside them (a claim's HGETALL)
    cpu_us: float  # Redis CPU, everything it did for the step (parsing, replies, syscalls)


def _total(costs: Iterable[StepCost]) -> StepCost:
    found = list(costs)
    return StepCost(
        sum(cost.script_us for cost in found),
        sum(cost.commands for cost in found),
        sum(cost.cpu_us for cost in found),
    )


def _scripts(before: _Reading, after: _Reading) -> tuple[int, int, int]:
    """Script calls, their usec (with the commands they ran) and the commands run between two
    readings: by the scripts and beside them (all but FCALL, MULTI/EXEC and the driver's INFO
    and FUNCTION calls)."""
    calls = usec = inside = 0
    for name, (count, spent) in after.commands.items():
        old_count, old_spent = before.commands.get(name, (0, 0))
        if name == "fcall":
            calls, usec = count - old_count, spent - old_spent
        elif name not in NOT_IN_SCRIPTS:
            inside += count - old_count
    return calls, usec, inside


class _Rig:
    """The stores on a private Redis, and each step's figures per job, round after round."""

    def __init__(self, server: _PrivateRedis, jobs: int) -> None:
        self.server, self.jobs = server, jobs
        settings = Settings(_env_file=None, rate_limit_rpm=0)  # type: ignore[call-arg]
        self.store = JobStore.from_settings(server.client, settings)
        self.dispatch = Dispatch(server.client, settings)
        self.deliveries = Deliveries(server.client)
        self.spec = JobSpec.parse(
            {"request": {"prompt": "a lighthouse at dawn"}, "webhook_url": f"https://{ENDPOINT}/h"}
        )
        self.figures: dict[str, list[StepCost]] = {step: [] for step in STEPS}

    def timed(self, step: str, run: Callable[[], object], *, kept: bool) -> None:
        before = self.server.reading()
        run()
        after = self.server.reading()
        calls, usec, commands = _scripts(before, after)
        if calls == 0:
            msg = f"{step}: no script ran"
            raise RuntimeError(msg)
        if kept:
            cpu_us = (after.cpu_s - before.cpu_s) * 1e6
            self.figures[step].append(
                StepCost(usec / self.jobs, commands / self.jobs, cpu_us / self.jobs)
            )

    def round(self, number: int) -> None:
        kept = number >= WARMUP_ROUNDS
        made = int(time.time() * 1000)
        batch = [
            NewJob(f"r{number}-{i:05d}", MODEL, self.spec, made, tenant=f"t{i % TENANTS}")
            for i in range(self.jobs)
        ]
        ids = [job.job_id for job in batch]
        finished: list[Finished] = []
        self.timed("submit", lambda: self.store.create(batch), kept=kept)
        self.timed("release", lambda: self.dispatch.release(MODEL), kept=kept)
        self.timed("claim", lambda: [self.claim(job_id) for job_id in ids], kept=kept)
        self.timed("finish", lambda: finished.extend(map(self.finish, ids)), kept=kept)
        claims = [claim for done in finished for claim in done.claims]
        self.timed("delivery", lambda: [self.delivered(claim) for claim in claims], kept=kept)

    def claim(self, job_id: str) -> None:
        self.store.claim(job_id, OWNER, 60_000, call=True)

    def finish(self, job_id: str) -> Finished:
        return self.store.finish(
            job_id,
            OWNER,
            JobStatus.SUCCEEDED,
            {"s3_key": f"images/{job_id}.png", "seed": 1234},
            bought=True,
            send_now=1,
            delivery_lease_ms=30_000,
            slot=(ENDPOINT, 8, f"slot-{job_id}"),
        )

    def delivered(self, claim: DeliveryClaim) -> None:
        self.deliveries.record(
            claim.delivery_id,
            "delivered",
            attempt=1,
            status=200,
            latency_ms=3,
            error=None,
            delay_s=None,
            slot=(ENDPOINT, claim.slot) if claim.slot else None,
        )


def measure(rounds: int, jobs: int, redis_cpu: int | None) -> dict[str, StepCost]:
    """Per step, per job: the medians over the rounds of each figure."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-job-steps-") as path,
        _PrivateRedis("job-steps", Path(path), redis_cpu) as server,
    ):
        rig = _Rig(server, jobs)
        for number in range(rounds):
            rig.round(number)
    return {
        step: StepCost(
            statistics.median(cost.script_us for cost in values),
            statistics.median(cost.commands for cost in values),
            statistics.median(cost.cpu_us for cost in values),
        )
        for step, values in rig.figures.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--redis-cpu", type=int, default=None)
    args = parser.parse_args(argv)
    if args.rounds <= WARMUP_ROUNDS or args.jobs < 1:
        parser.error(f"--rounds must be more than {WARMUP_ROUNDS} and --jobs at least 1")
    figures = measure(args.rounds, args.jobs, args.redis_cpu)
    rows = [*figures.items(), ("whole job", _total(figures.values()))]
    print(f"{'step':10} {'script us/job':>14} {'commands/job':>13} {'Redis CPU us/job':>17}")
    for step, cost in rows:
        print(f"{step:10} {cost.script_us:14.1f} {cost.commands:13.1f} {cost.cpu_us:17.1f}")


if __name__ == "__main__":
    main()
