"""``make bench-dispatch``: what the dispatcher costs Redis as tenants, unservable tenants and
waiting jobs grow, against the same figures with 10 tenants in the same run.

On a private ``redis-server`` (``tests.bench.whole_job``'s, checked to be ours), the real
scripts through the real stores:

  release    Redis time (``INFO commandstats``, EVALSHA usec) per released job, each run
             releasing one job (a token per run, as at a steady quota), and the same with runs of
             up to 64 jobs
  position   Redis time per position read of a random waiting job
  idle       Redis CPU per second (``used_cpu_sys + used_cpu_user``) of 20 worker processes'
             release loops (each reading the intake too, as workers do) while every waiting
             tenant cannot be served
  scrape     wall time of a ``/metrics`` scrape and of ``GET /v1/tenant`` at 10,000 tenants
  script     the longest single script run (SLOWLOG, every command logged), p99 and max, while
             submitting, releasing at 60,000/min, claiming and finishing
  whole job  Redis CPU per whole job (submit to final record and webhook) against a Celery no-op
             task (``tests.bench.whole_job``)

Rows: 10 tenants and none unservable (the baseline), 1,000 and 10,000 tenants with 0 and 1,000
more that cannot be served (half past a hard budget, half at their concurrency cap), with 1,000
and 1,000,000 jobs waiting. ``--quick`` stops at 100,000 jobs (the 1 M rows take minutes to load);
``--scrape-only`` loads only the last row and measures only the scrape (with ``--quick``: a
couple of minutes).

Goals, one line each at the end: release and position cost at 10,000 tenants within 2x of the
baseline; idle loops below 1 % of one Redis core; no script holds Redis longer than 2 ms p99; a
scrape under 50 ms at 10,000 tenants; Redis CPU per whole job at most 2x the Celery no-op's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from imagegen.contract import JobSpec
from imagegen.records import JobStatus, NewJob
from imagegen.redis import keys
from imagegen.redis.scripts import SCRIPT_NAMES, function_name
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore
from imagegen.store.spend import Budget, Ledger, periods
from tests.bench.whole_job import _PrivateRedis

MODEL = "stability.stable-image-core-v1:0"
RELEASE_GOAL_RATIO = 2.0
IDLE_GOAL_MS_PER_S = 10.0  # 1 % of one core
SCRIPT_GOAL_MS = 2.0
SCRAPE_GOAL_MS = 50.0
CHUNK = 1_000
RELEASE_RUNS = 2_000
BATCH_RUNS = 30
ROUNDS = 3
POSITION_READS = 1_000
IDLE_PROCESSES = 20
IDLE_S = 10.0
SCRAPES = 200  # p99 is then the 2nd slowest, not the slowest
RECENT_STARTS = 2_000  # the cap of a model's list of last starts (lifecycle.lua)
LOAD_S = 10.0


@dataclass(frozen=True)
class Row:
    tenants: int
    unservable: int
    jobs: int
    release_us: float  # per released job, one job a run
    batch_release_us: float  # per released job, runs of up to 64
    position_us: float
    release_commands: float  # Redis commands a one-job run runs
    position_commands: float  # ... a position read


@dataclass(frozen=True)
class Figures:
    rows: list[Row]
    idle_ms_per_s: float
    idle_background_ms_per_s: float  # the same Redis with no loops running (its own cron)
    scrape_ms: tuple[float, float]  # median, p99
    tenant_ms: tuple[float, float]
    scrape_shape: ScrapeShape
    script_p99_ms: float
    script_max_ms: float
    slowest_script: str
    exec_p99_ms: float
    whole_job: Any


def settings_for(url: str, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": url,
        "rate_limit_rpm": 6_000_000,
        "rate_limit_burst": 64,
        "dispatch_lookahead_s": 1_000_000,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


def evalsha_usec(client: redis.Redis) -> int:
    """Redis time spent in our scripts (functions) so far, in microseconds."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in ("fcall", "fcall_ro"))


def nested_commands(client: redis.Redis) -> int:
    """Commands run so far other than function calls and INFO: those our functions ran."""
    stats = client.info("commandstats")
    return sum(
        int(v.get("calls", 0))
        for k, v in stats.items()
        if k not in ("cmdstat_fcall", "cmdstat_fcall_ro", "cmdstat_info")
    )


class Loader:
    """Jobs and tenants put in place through the stores, as the service does."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.store = JobStore.from_settings(client, settings)
        self.dispatch = Dispatch(client, settings)
        self.ledger = Ledger(client, settings)
        self.spec = JobSpec.parse({"request": {"prompt": "a lighthouse at dawn"}})
        self.count = 0

    def submit(self, tenants: Sequence[str], per_tenant: int) -> None:
        now = int(time.time() * 1000)
        batch: list[NewJob] = []
        for _ in range(per_tenant):
            for tenant in tenants:
                self.count += 1
                batch.append(NewJob(f"{tenant}.j{self.count}", MODEL, self.spec, now, tenant))
                if len(batch) >= CHUNK:
                    self.store.create(batch)
                    batch = []
        if batch:
            self.store.create(batch)

    def unservable(self, n: int) -> None:
        """n tenants that cannot be served: half with no budget, half at a concurrency cap of 1
        with their one job released."""
        capped = [f"capped{i:05d}" for i in range(n // 2)]
        broke = [f"broke{i:05d}" for i in range(n - n // 2)]
        for tenant in capped:
            self.dispatch.set_tenant_limits(tenant, max_concurrency=1)
        self.submit(capped, 2)
        self.run_all()
        for tenant in broke:
            self.ledger.set_budget(Budget(tenant, daily_hard=0.0))
        self.submit(broke, 1)
        self.run_all()

    def run_all(self) -> None:
        """Release everything that can be, each released job claimed (running for an hour),
        until nothing more goes."""
        ample = Dispatch(self.client, self.settings.model_copy(update={"rate_limit_rpm": 0.0}))
        released = keys.dispatch_keys(MODEL).released
        while ample.release(MODEL).released:
            for job_id in self.client.zrange(released, 0, -1):
                self.store.claim(str(job_id), "bench", 3_600_000)
        self.client.delete("interactive")


def measure_row(
    server: _PrivateRedis, tenants: int, unservable: int, jobs: int
) -> tuple[Row, Loader]:
    client = server.client
    client.flushall()
    settings = settings_for(server.url)
    loader = Loader(client, settings)
    if unservable:
        loader.unservable(unservable)
    names = [f"t{i:05d}" for i in range(tenants)]
    loader.submit(names, max(1, jobs // tenants))
    dispatch = loader.dispatch
    # Position reads of random waiting jobs (before any is released), three rounds: the median.
    sample = []
    for tenant in random.sample(names, min(len(names), 200)):
        members = client.zrange(keys.waiting_key(MODEL, tenant, "interactive"), 0, -1)
        sample += [str(m) for m in members[:: max(1, len(members) // 5)]]
    positions = []
    for _ in range(ROUNDS):
        before, commands_before = evalsha_usec(client), nested_commands(client)
        for _ in range(POSITION_READS):
            dispatch.position(random.choice(sample), MODEL)
        positions.append(
            (
                (evalsha_usec(client) - before) / POSITION_READS,
                (nested_commands(client) - commands_before) / POSITION_READS,
            )
        )
    position_us, position_commands = statistics.median(positions)
    # One job a run: the bucket gives one token per run (a quarter of the jobs at most, over the
    # rounds), three rounds: the median.
    one = Dispatch(client, settings_for(server.url, rate_limit_rpm=60_000, rate_limit_burst=1))
    clock = time.time() * 1000
    one.release(MODEL, now_ms=clock)
    runs = max(1, min(RELEASE_RUNS, jobs // (4 * ROUNDS)))
    releases = []
    for _ in range(ROUNDS):
        before, released = evalsha_usec(client), 0
        commands_before = nested_commands(client)
        for _ in range(runs):
            clock += 1.0  # a token every millisecond at 60,000/min
            released += one.release(MODEL, now_ms=clock).released
        releases.append(
            (
                (evalsha_usec(client) - before) / max(1, released),
                (nested_commands(client) - commands_before) / runs,
            )
        )
        client.delete("interactive")
    release_us, release_commands = statistics.median(releases)
    # Runs of up to 64 (after idle, or without a rate).
    before, released = evalsha_usec(client), 0
    for _ in range(max(1, min(BATCH_RUNS, jobs // 4 // 64))):
        clock += 1000.0  # the bucket refills (to its burst): the run is bound by RELEASE_MOST
        released += dispatch.release(MODEL, now_ms=clock).released
    client.delete("interactive")
    batch_us = (evalsha_usec(client) - before) / max(1, released)
    row = Row(
        tenants,
        unservable,
        jobs,
        release_us,
        batch_us,
        position_us,
        release_commands,
        position_commands,
    )
    return row, loader


def _idle_loop(url: str, seconds: float, ready: Any) -> None:
    from worker.intake import Intake
    from worker.release_loop import ReleaseLoop

    settings = settings_for(url, rate_limit_rpm=1200)
    client = redis.Redis.from_url(url, decode_responses=True)
    store = JobStore.from_settings(client, settings)
    dispatch = Dispatch(client, settings)
    intake = Intake(store, dispatch, settings)
    loop = ReleaseLoop(dispatch, settings, read_intake=intake.read_list)
    loop.run_once()  # connections open, the library loaded
    ready.put(True)
    loop.start()
    time.sleep(seconds)
    loop.stop()


def measure_idle(server: _PrivateRedis) -> tuple[float, float]:
    """Redis CPU (ms per second) of 20 processes' release loops, every tenant unservable,
    measured once every process runs its loop; and, first, of the same Redis with no loop (what
    the server spends on its own: its cron, expiring keys)."""
    client = server.client
    client.flushall()
    loader = Loader(client, settings_for(server.url))
    loader.unservable(1_000)
    time.sleep(2)
    start = server.reading()
    time.sleep(IDLE_S)
    end = server.reading()
    background = (end.cpu_s - start.cpu_s) * 1000 / (end.at - start.at)
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    processes = [
        context.Process(target=_idle_loop, args=(server.url, IDLE_S + 120, ready))
        for _ in range(IDLE_PROCESSES)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    time.sleep(2)
    start = server.reading()
    time.sleep(IDLE_S)
    end = server.reading()
    for process in processes:
        process.terminate()
        process.join(timeout=30)
    return (end.cpu_s - start.cpu_s) * 1000 / (end.at - start.at), background


@dataclass(frozen=True)
class ScrapeShape:
    """What the scrape read and wrote: the state's size and the answer's."""

    tenants: int  # with jobs waiting, each with spend today and this month
    calls_last_minute: int  # the model's releases over the last minute (the shares' source)
    recent_starts: int  # the model's list of last starts (the waits' source)
    samples: int
    size: int  # bytes
    # CPU time of this process (the app and the test client) per scrape, median and p99: the
    # scrape's own cost, whatever else the machine runs (the wall time includes waiting for a core)
    cpu_ms: tuple[float, float]


def measure_scrape(
    server: _PrivateRedis, loader: Loader
) -> tuple[tuple[float, float], tuple[float, float], ScrapeShape]:
    """A /metrics scrape and GET /v1/tenant with the state as it is (10,000 tenants), after
    every tenant has spend today and this month and the list of recent starts is full. Every
    scrape reads Redis afresh (nothing is cached between them)."""
    from fastapi.testclient import TestClient

    from producer.api.app import create_app, freeze_what_startup_built
    from producer.client import Client

    client = server.client
    tenants = sorted(str(t) for t in client.zrange(keys.dispatch_keys(MODEL).waiting, 0, -1))
    # A busy fleet's last starts: released jobs claimed through the real script until the list
    # of recent waits is at its cap (what the per-tenant wait figures are computed from).
    owner = uuid.uuid4().hex
    for job_id in client.zrange(keys.dispatch_keys(MODEL).released, 0, RECENT_STARTS - 1):
        loader.store.claim(str(job_id), owner, 3_600_000)
    day, month = periods()
    pipe = client.pipeline(transaction=False)
    now_ms = int(time.time() * 1000)
    for tenant in tenants:
        for period in (day, month):
            pipe.hset(
                keys.spend_key(tenant, period),
                mapping={"spent": 40_000, f"spent|{MODEL}": 40_000, f"images|{MODEL}": 1},
            )
            pipe.expire(keys.spend_key(tenant, period), 86_400)
        pipe.zadd(keys.SPEND_TENANTS_KEY, {tenant: now_ms})
    pipe.execute()
    settings = settings_for(server.url, api_admin_token="x" * 32)
    with Client(settings, redis_client=client) as api_client:
        _, key = api_client.api_keys.create(tenants[0])
    app = create_app(settings, redis_client=client)
    freeze_what_startup_built(app)  # as the served API does (app_from_env)
    scrapes, reads, cpu = [], [], []
    with TestClient(app) as http:
        for _ in range(SCRAPES):
            start, start_cpu = time.perf_counter(), time.process_time()
            answer = http.get("/metrics")
            scrapes.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            assert answer.status_code == 200
            start = time.perf_counter()
            assert (
                http.get("/v1/tenant", headers={"Authorization": f"Bearer {key}"}).status_code
                == 200
            )
            reads.append((time.perf_counter() - start) * 1000)
    calls = keys.limiter_keys(settings.aws_region, MODEL).calls
    shape = ScrapeShape(
        tenants=len(tenants),
        calls_last_minute=client.zcount(calls, time.time() * 1000 - 60_000, "+inf"),
        recent_starts=client.llen(keys.recent_waits_key(MODEL)),
        samples=sum(1 for line in answer.text.splitlines() if line and not line.startswith("#")),
        size=len(answer.content),
        cpu_ms=_median_p99(cpu),
    )
    return _median_p99(scrapes), _median_p99(reads), shape


def _median_p99(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure_scripts(server: _PrivateRedis) -> tuple[float, float, str, float]:
    """The longest script runs while 1,000 tenants submit and the fleet releases at 60,000/min,
    claims and finishes: p99 and max of EVALSHA (and p99 of EXEC, a submission's transaction)
    from a SLOWLOG that logs every command."""
    client = server.client
    client.flushall()
    settings = settings_for(
        server.url, rate_limit_rpm=60_000, rate_limit_burst=10, dispatch_lookahead_s=2
    )
    loader = Loader(client, settings)
    loader.unservable(1_000)
    tenants = [f"t{i:05d}" for i in range(1_000)]
    loader.submit(tenants, 5)
    functions = {function_name(name): name for name in SCRIPT_NAMES}
    client.config_set("slowlog-log-slower-than", 0)
    client.config_set("slowlog-max-len", 1_000_000)
    client.slowlog_reset()
    stop = threading.Event()

    def submit() -> None:
        while not stop.is_set():
            loader_local = Loader(redis.Redis.from_url(server.url, decode_responses=True), settings)
            loader_local.count = random.randint(10**7, 10**9)
            loader_local.store.create(
                [
                    NewJob(
                        f"{t}.s{uuid.uuid4().hex[:10]}",
                        MODEL,
                        loader.spec,
                        int(time.time() * 1000),
                        t,
                    )
                    for t in random.sample(tenants, 20)
                ],
                dispatch=loader_local.dispatch,
            )
            time.sleep(0.02)

    def work() -> None:
        own = redis.Redis.from_url(server.url, decode_responses=True)
        store = JobStore.from_settings(own, settings)
        dispatch = Dispatch(own, settings)
        owner = uuid.uuid4().hex
        while not stop.is_set():
            dispatch.release(MODEL)
            for _ in range(64):
                raw = own.rpop("interactive")
                if raw is None:
                    break
                job_id = __import__("json").loads(raw)["headers"]["id"]
                if store.claim(job_id, owner, 60_000).state.value == "claimed":
                    store.finish(job_id, owner, JobStatus.SUCCEEDED, {"s3_key": "k"})
            time.sleep(0.001)

    threads = [threading.Thread(target=submit), *(threading.Thread(target=work) for _ in range(2))]
    for thread in threads:
        thread.start()
    time.sleep(LOAD_S)
    stop.set()
    for thread in threads:
        thread.join()
    entries = client.slowlog_get(1_000_000)
    client.config_set("slowlog-log-slower-than", 10_000)
    scripts: list[tuple[float, str]] = []
    execs: list[float] = []
    for entry in entries:
        command = entry["command"]
        if isinstance(command, bytes):
            command = command.decode(errors="replace")
        words = str(command).split()
        if not words:
            continue
        name = words[0].lower()
        if name in ("fcall", "fcall_ro"):
            scripts.append((entry["duration"] / 1000, functions.get(words[1], words[1])))
        elif name == "exec":
            execs.append(entry["duration"] / 1000)
    scripts.sort()
    durations = [d for d, _ in scripts]
    p99 = durations[int(len(durations) * 0.99)] if durations else 0.0
    slowest = scripts[-1] if scripts else (0.0, "-")
    exec_p99 = sorted(execs)[int(len(execs) * 0.99)] if execs else 0.0
    return p99, slowest[0], slowest[1], exec_p99


@contextmanager
def _run_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as path:
        yield Path(path)


def measure(*, quick: bool = False, whole_jobs: int = 1000) -> Figures:
    from tests.bench import whole_job

    plan = [
        (10, 0, 1_000),
        (1_000, 0, 1_000),
        (1_000, 1_000, 1_000),
        (10_000, 0, 1_000 * 10),
        (10_000, 1_000, 10_000),
    ]
    big = 100_000 if quick else 1_000_000
    plan += [(10_000, 0, big), (10_000, 1_000, big)]
    rows: list[Row] = []
    with _run_dir() as run_dir, _PrivateRedis("dispatch", run_dir) as server:
        loader = None
        for tenants, unservable, jobs in plan:
            print(
                f"loading {tenants:,} tenants, {unservable:,} unservable, {jobs:,} jobs ...",
                file=sys.stderr,
            )
            row, loader = measure_row(server, tenants, unservable, jobs)
            rows.append(row)
            print(f"  {row}", file=sys.stderr)
        assert loader is not None
        print("scrape ...", file=sys.stderr)
        scrape, tenant, shape = measure_scrape(server, loader)
        print("idle loops ...", file=sys.stderr)
        idle, idle_background = measure_idle(server)
        print("scripts under load ...", file=sys.stderr)
        p99, slowest_ms, slowest_name, exec_p99 = measure_scripts(server)
    print("whole job against a Celery no-op ...", file=sys.stderr)
    whole = whole_job.measure(jobs=whole_jobs)
    return Figures(
        rows,
        idle,
        idle_background,
        scrape,
        tenant,
        shape,
        p99,
        slowest_ms,
        slowest_name,
        exec_p99,
        whole,
    )


def _verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


def report(figures: Figures) -> list[str]:
    from tests.bench import whole_job

    header = (
        "tenants",
        "unservable",
        "jobs",
        "release us/job",
        "(runs of 64)",
        "commands/run",
        "position us",
        "commands/read",
    )
    lines = [
        "The dispatcher's Redis cost (real scripts, a private Redis; us = microseconds of Redis",
        "time per released job or per position read)",
        "",
        " ".join(f"{name:>14}" for name in header),
    ]
    for row in figures.rows:
        cells = (
            f"{row.tenants:,}",
            f"{row.unservable:,}",
            f"{row.jobs:,}",
            f"{row.release_us:.1f}",
            f"{row.batch_release_us:.1f}",
            f"{row.release_commands:.1f}",
            f"{row.position_us:.1f}",
            f"{row.position_commands:.1f}",
        )
        lines.append(" ".join(f"{cell:>14}" for cell in cells))
    base = figures.rows[0]
    big = [r for r in figures.rows if r.tenants >= 10_000]
    worst = max(big, key=lambda r: r.release_us)
    worst_position = max(big, key=lambda r: r.position_us)
    release_ratio = worst.release_us / base.release_us
    position_ratio = worst_position.position_us / base.position_us
    idle_percent = figures.idle_ms_per_s / 10
    lines += [
        "",
        f"idle release loops of {IDLE_PROCESSES} processes, every waiting tenant unservable: "
        f"{figures.idle_ms_per_s:.2f} ms of Redis CPU per second (of which the server's own, "
        f"measured with no loop: {figures.idle_background_ms_per_s:.2f} ms)",
        *scrape_lines(figures.scrape_ms, figures.tenant_ms, figures.scrape_shape)[:-1],
        f"scripts while releasing at 60,000/min: p99 {figures.script_p99_ms:.3f} ms, longest "
        f"{figures.script_max_ms:.3f} ms ({figures.slowest_script})",
        "",
        *whole_job.report_lines(figures.whole_job),
        "",
        f"release cost at 10,000 tenants within {RELEASE_GOAL_RATIO:g}x of 10 tenants: "
        f"{worst.release_us:.1f} vs {base.release_us:.1f} us ({release_ratio:.2f}x) ... "
        + _verdict(release_ratio <= RELEASE_GOAL_RATIO),
        f"position cost at 10,000 tenants within {RELEASE_GOAL_RATIO:g}x of 10 tenants: "
        f"{worst_position.position_us:.1f} vs {base.position_us:.1f} us "
        f"({position_ratio:.2f}x) ... " + _verdict(position_ratio <= RELEASE_GOAL_RATIO),
        f"idle release loops below 1 % of one Redis core: {idle_percent:.2f} % ... "
        + _verdict(figures.idle_ms_per_s < IDLE_GOAL_MS_PER_S),
        f"no script holds Redis longer than {SCRIPT_GOAL_MS:g} ms p99: "
        f"{figures.script_p99_ms:.3f} ms ... " + _verdict(figures.script_p99_ms <= SCRIPT_GOAL_MS),
        scrape_lines(figures.scrape_ms, figures.tenant_ms, figures.scrape_shape)[-1],
    ]
    return lines


def scrape_lines(
    scrape_ms: tuple[float, float], tenant_ms: tuple[float, float], shape: ScrapeShape
) -> list[str]:
    """The scrape's figures, then its goal line (median and p99 both under the goal)."""
    scrape_median, scrape_p99 = scrape_ms
    tenant_median, tenant_p99 = tenant_ms
    return [
        f"/metrics at {shape.tenants:,} tenants (each with spend today and this month; "
        f"{shape.calls_last_minute:,} releases in the last minute, {shape.recent_starts:,} recent "
        f"starts; {shape.samples:,} samples, {shape.size / 1000:.0f} kB), {SCRAPES} scrapes: "
        f"{scrape_median:.1f} ms median, {scrape_p99:.1f} ms p99 (CPU: {shape.cpu_ms[0]:.1f} ms "
        f"median, {shape.cpu_ms[1]:.1f} ms p99)",
        f"GET /v1/tenant at {shape.tenants:,} tenants: {tenant_median:.1f} ms median, "
        f"{tenant_p99:.1f} ms p99",
        f"a /metrics scrape under {SCRAPE_GOAL_MS:g} ms at {shape.tenants:,} tenants: median "
        f"{scrape_median:.1f} ms, p99 {scrape_p99:.1f} ms ... "
        + _verdict(max(scrape_median, scrape_p99) < SCRAPE_GOAL_MS),
    ]


def measure_scrape_only(*, quick: bool) -> list[str]:
    """Only the scrape, on the state the full run scrapes: 10,000 tenants waiting, 1,000 that
    cannot be served, and 100,000 jobs (1,000,000 without ``quick``)."""
    with _run_dir() as run_dir, _PrivateRedis("dispatch", run_dir) as server:
        jobs = 100_000 if quick else 1_000_000
        print(f"loading 10,000 tenants, 1,000 unservable, {jobs:,} jobs ...", file=sys.stderr)
        _, loader = measure_row(server, 10_000, 1_000, jobs)
        print("scrape ...", file=sys.stderr)
        return scrape_lines(*measure_scrape(server, loader))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="stop at 100,000 waiting jobs")
    parser.add_argument("--whole-jobs", type=int, default=1000)
    parser.add_argument(
        "--scrape-only",
        action="store_true",
        help="only the /metrics and GET /v1/tenant figures at 10,000 tenants, and their goal",
    )
    args = parser.parse_args(argv)
    if args.scrape_only:
        lines = measure_scrape_only(quick=args.quick)
    else:
        lines = report(measure(quick=args.quick, whole_jobs=args.whole_jobs))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
