"""Redis CPU per whole job: the real service against a Celery no-op task, in the same run.

``python -m tests.bench.whole_job --jobs 1000 --rounds 5`` (one section of ``make
bench-dispatch``; ``measure()`` returns the figures). Each run has a private ``redis-server`` of
its own (a free port on 127.0.0.1, no persistence, checked to be the process we started), so
nothing else touches it:

  ours            the local stack (devstack): one worker process, the threads pool, the
                  Bedrock emulator with no latency and no quota, moto's S3, the limiter off, a
                  webhook receiver on loopback. A whole job is: submitted with
                  ``Client.submit_many`` (with a webhook URL), released, run, its image
                  uploaded, its record final, and its webhook delivered (the receiver answered
                  2xx) and recorded.
  no-op, events   a plain Celery app (``tests/bench/noop_app.py``): a task that returns 1,
                  acks_late, prefetch 1, reject on worker lost, JSON, a Redis result backend
                  on the same server, the threads pool with the same concurrency, task events
                  on (as ours sends them, for Flower). Sent with ``apply_async`` at the rate
                  ours ran in the same round (its jobs per second), waited for with
                  ``AsyncResult.get`` (Celery's pub/sub result consumer).
  no-op, flat out the same, sent as fast as the driver can (information only).
  no-op, quiet    the same as flat out, without task events (information only).

Why at ours' rate: Redis's CPU per task depends on how fast tasks come, not only on what each
does. At a few hundred a second a server wakes once for several clients' commands, finds the
next message already queued (BRPOP returns at once) and keeps its caches warm; at ours' rate
(about 70 a second here, bound by the worker's own work: the image, S3, the webhook) it wakes
for nearly every command and each BRPOP blocks first. The same no-op cost Redis 0.55 ms a task
sent at 70 a second and 0.40 ms flat out, in one session: comparing ours with the flat-out
no-op charges ours about 0.15 ms a job that any Celery task at that rate pays. The flat-out
ratio is printed beside the goal's.

For each: a warm-up (scripts loaded, connections open), then the stack is left with nothing to
do until nothing is queued or unacknowledged, then about ten seconds of idle are measured (Redis
CPU per second of the stack polling with nothing to do, to subtract if wanted), and that
reading is the "before". The jobs are sent; the "after" reading is taken as soon as the last
one is done (its webhook answered, or its result read) and nothing is left unacknowledged.
Redis CPU is ``used_cpu_sys + used_cpu_user`` from ``INFO cpu``; commands are the
``INFO commandstats`` deltas, less the few commands this driver sent itself. Commands run by a
Lua script (or inside MULTI/EXEC) are counted as commands too, and EVALSHA's (EXEC's) time
includes theirs. Round trips are the server's read system calls (``syscr`` in /proc/PID/io):
one per request it reads, a pipeline's commands arriving in one.

The runs make a round, and the measurement is several rounds, one after another: the
machine's speed drifts over minutes (on a shared 2-core VM one run of ours can cost a fifth more
Redis CPU per job than the one before it, and the no-op as much), so each round's ratio compares
runs made a minute apart, and the figures shown are the round with the median ratio.

With ``--redis-cpu N`` each private Redis runs on CPU N only (``taskset``); start the driver on
the other CPUs (``taskset -c 0 python -m tests.bench.whole_job --redis-cpu 1``) and Redis has a
core to itself, as on a host of its own: its CPU per job is then what its own work costs,
without the other processes' pressure on its caches (information: the goal is read on the
default run).

Goal: Redis CPU per whole job of ours <= 2x the Celery no-op's with events on, sent at ours'
rate (the median round's).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery.exceptions import TimeoutError as ResultTimeoutError

from devstack.processes import (
    ProcessGroup,
    StackError,
    free_port,
    interrupt_on_signal,
    python_module,
    redis_answers,
    redis_server_binary,
    tail,
)
from devstack.receiver import Receiver
from devstack.stack import Stack, StackOptions
from imagegen.health import worker_answers
from imagegen.messages import QUEUES
from producer.client import Client
from tests.bench.noop_app import CONCURRENCY_ENV, EVENTS_ENV, NOOP_TASK, URL_ENV, make_app

__all__ = ["CommandCost", "RunFigures", "WholeJobFigures", "main", "measure"]

GOAL_RATIO = 2.0
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
WARMUP_JOBS = 20
IDLE_S = 5.0
ROUNDS = 5  # the machine drifts: a median of five rounds moves less than one of three
SUBMIT_CHUNK = 500
POLL_S = 0.02
QUIET_POLL_S = 0.005
QUIET_TIMEOUT_S = 60.0
STALL_S = 60.0  # no job done for this long: something is stuck
TOP = 10
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")
CELERY_QUEUE = "celery"
# kombu's Redis transport keeps a message here from delivery until its ack.
UNACKED = "unacked"
OURS_ENV = {
    # The receiver listens on loopback over plain http (as in the integration tests).
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    # The quota is not what the run waits for: no limiter (and no emulator quota).
    "IMAGEGEN_RATE_LIMIT_RPM": "0",
    "IMAGEGEN_MAX_QUEUED_TOTAL": "100000000",
    "IMAGEGEN_MAX_QUEUED_PER_TENANT": "100000000",
}


class BenchError(RuntimeError):
    """The measurement could not be made (a process died, a timeout)."""


# -- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandCost:
    command: str
    calls_per_job: float
    usec_per_job: float


@dataclass(frozen=True)
class RunFigures:
    name: str
    jobs: int
    seconds: float  # from the "before" reading to the "after" one
    redis_cpu_ms: float
    commands: int  # including those run by scripts and inside MULTI/EXEC
    script_calls: int
    idle_seconds: float
    idle_cpu_ms: float
    idle_commands: int
    top: tuple[CommandCost, ...]  # by usec, most first
    reads: int  # the server's read system calls: the round trips made to it
    webhook_requests: int | None = None  # ours only: requests the receiver got
    deferred_webhooks: int | None = None  # ours only: "endpoint busy" deferrals in the log

    @property
    def cpu_ms_per_job(self) -> float:
        return self.redis_cpu_ms / self.jobs

    @property
    def commands_per_job(self) -> float:
        return self.commands / self.jobs

    @property
    def reads_per_job(self) -> float:
        return self.reads / self.jobs

    @property
    def scripts_per_job(self) -> float:
        return self.script_calls / self.jobs

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def idle_cpu_ms_per_s(self) -> float:
        return self.idle_cpu_ms / self.idle_seconds

    @property
    def idle_commands_per_s(self) -> float:
        return self.idle_commands / self.idle_seconds

    @property
    def net_cpu_ms_per_job(self) -> float:
        """Redis CPU per job less what the stack would have spent idle over the run."""
        return (self.redis_cpu_ms - self.idle_cpu_ms_per_s * self.seconds) / self.jobs


@dataclass(frozen=True)
class WholeJobFigures:
    jobs: int
    concurrency: int
    redis_version: str
    ours: RunFigures
    noop: RunFigures  # task events on, as ours, sent at ours' rate: the goal's baseline
    noop_flat_out: RunFigures  # task events on, sent as fast as the driver can
    noop_quiet: RunFigures  # task events off, flat out
    goal_ratio: float = GOAL_RATIO
    # ours / no-op (events on, at ours' rate) in each round, in the order run (these figures:
    # the median one), and ours / no-op (events on, flat out) in the same rounds
    round_ratios: tuple[float, ...] = ()
    round_flat_out_ratios: tuple[float, ...] = ()
    redis_cpu: int | None = None  # the one CPU each private Redis ran on (None: any)

    @property
    def ratio(self) -> float:
        return self.ours.cpu_ms_per_job / self.noop.cpu_ms_per_job

    @property
    def ratio_flat_out(self) -> float:
        return self.ours.cpu_ms_per_job / self.noop_flat_out.cpu_ms_per_job

    @property
    def ratio_quiet(self) -> float:
        return self.ours.cpu_ms_per_job / self.noop_quiet.cpu_ms_per_job

    @property
    def net_ratio(self) -> float:
        return self.ours.net_cpu_ms_per_job / self.noop.net_cpu_ms_per_job

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal_ratio


# -- a private Redis and its readings --------------------------------------------------------


@dataclass(frozen=True)
class _Reading:
    at: float  # time.monotonic()
    cpu_s: float
    commands: dict[str, tuple[int, int]]  # command: (calls, usec)
    mine: Counter[str]  # commands this driver had sent to the server before this reading
    reads: int  # read system calls the server made so far (/proc/PID/io): its round trips


class _PrivateRedis:
    """A ``redis-server`` of our own on a free port; ``reading()`` takes INFO cpu and
    commandstats, and every command sent through ``client`` is counted, to be left out."""

    def __init__(self, name: str, run_dir: Path, cpu: int | None = None) -> None:
        self.name = name
        self.cpu = cpu  # the only CPU it may run on (None: any)
        self.data_dir = run_dir / name
        self.data_dir.mkdir(parents=True)
        self.processes = ProcessGroup(run_dir / "logs")
        self.url = ""
        self.version = ""
        self.mine: Counter[str] = Counter()
        self.pid = 0
        self._client: redis.Redis | None = None

    def __enter__(self) -> _PrivateRedis:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            msg = "no redis-server found (apt-get install redis-server)"
            raise BenchError(msg)
        problems = []
        for _ in range(3):  # a free port can be taken by someone else before we bind it
            port = free_port(HOST)
            url = f"redis://{HOST}:{port}/0"
            pinned = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
            argv = [
                *pinned,  # taskset execs the server: the pid is still the one checked below
                binary,
                "--bind",
                HOST,
                "--port",
                str(port),
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ]
            try:
                process = self.processes.spawn(
                    self.name,
                    argv,
                    env=os.environ,
                    ready=lambda url=url: redis_answers(url, 0.2),
                    timeout_s=15,
                )
            except StackError as e:
                problems.append(str(e))
                self.processes.stop_all()
                continue
            client = redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=30)
            server = client.info("server")
            if int(server["process_id"]) == process.pid and int(server["tcp_port"]) == port:
                self._client, self.url, self.pid = client, url, process.pid
                self.version = str(server["redis_version"])
                self.mine["info"] += 1
                return
            client.close()
            problems.append(
                f"port {port} answered as process {server['process_id']}, not ours ({process.pid})"
            )
            self.processes.stop_all()
        msg = f"could not start a private Redis: {'; '.join(problems)}"
        raise BenchError(msg)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.processes.stop_all()

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            msg = f"{self.name} is not running"
            raise BenchError(msg)
        return self._client

    def reading(self) -> _Reading:
        mine = Counter(self.mine)
        info = self.client.info("cpu", "commandstats")
        at = time.monotonic()
        self.mine["info"] += 1
        return _Reading(
            at=at,
            reads=_read_calls(self.pid),
            cpu_s=float(info["used_cpu_sys"]) + float(info["used_cpu_user"]),
            commands={
                key.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
                for key, value in info.items()
                if key.startswith("cmdstat_")
            },
            mine=mine,
        )

    def quiet(self, queues: Sequence[str], timeout_s: float = QUIET_TIMEOUT_S) -> None:
        """Wait until no message is queued or delivered but unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while True:
            pipe = self.client.pipeline(transaction=False)
            pipe.hlen(UNACKED)
            for queue in queues:
                pipe.llen(queue)
            counts = pipe.execute()
            self.mine["hlen"] += 1
            self.mine["llen"] += len(queues)
            if not any(counts):
                return
            if time.monotonic() > deadline:
                names = [UNACKED, *queues]
                left = ", ".join(f"{n} {c}" for n, c in zip(names, counts, strict=True) if c)
                msg = f"{self.name}: still not quiet after {timeout_s:g} s ({left})"
                raise BenchError(msg)
            time.sleep(QUIET_POLL_S)


def _read_calls(pid: int) -> int:
    """The read system calls process ``pid`` has made (``syscr`` in /proc/PID/io): for a Redis
    server, about one per request it reads (a pipeline's commands come in one), so the round
    trips clients made to it; the driver's own few are counted too."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "syscr":
            return int(value)
    msg = f"no syscr in /proc/{pid}/io"
    raise BenchError(msg)


def _commands(before: _Reading, after: _Reading) -> dict[str, tuple[int, int]]:
    """Calls and usec per command between two readings, less the driver's own."""
    found = {}
    for name, (calls_after, usec_after) in after.commands.items():
        calls_before, usec_before = before.commands.get(name, (0, 0))
        calls, usec = calls_after - calls_before, usec_after - usec_before
        mine = after.mine[name] - before.mine[name]
        if mine and calls > 0:
            usec -= round(usec * min(mine, calls) / calls)
            calls -= mine
        if calls > 0:
            found[name] = (calls, usec)
    return found


def _figures(
    name: str,
    jobs: int,
    idle_from: _Reading,
    before: _Reading,
    after: _Reading,
    **extra: Any,
) -> RunFigures:
    run = _commands(before, after)
    idle = _commands(idle_from, before)
    top = sorted(run.items(), key=lambda item: item[1][1], reverse=True)[:TOP]
    return RunFigures(
        name=name,
        jobs=jobs,
        seconds=after.at - before.at,
        redis_cpu_ms=(after.cpu_s - before.cpu_s) * 1000,
        commands=sum(calls for calls, _ in run.values()),
        script_calls=sum(run.get(c, (0, 0))[0] for c in SCRIPT_COMMANDS),
        idle_seconds=before.at - idle_from.at,
        idle_cpu_ms=(before.cpu_s - idle_from.cpu_s) * 1000,
        idle_commands=sum(calls for calls, _ in idle.values()),
        top=tuple(CommandCost(c, calls / jobs, usec / jobs) for c, (calls, usec) in top),
        reads=after.reads - before.reads,
        **extra,
    )


# -- ours ------------------------------------------------------------------------------------


class _Hooks:
    """Jobs whose webhook the receiver answered with 2xx, on one path."""

    def __init__(self, receiver: Receiver, path: str) -> None:
        self.receiver = receiver
        self.path = path
        self.url = receiver.url(path)
        self.accepted: set[str] = set()
        self.requests = 0

    def poll(self) -> None:
        got = self.receiver.received(self.path)
        for request in got[self.requests :]:
            if not 200 <= int(request.get("status", 200)) < 300:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.accepted.add(str(json.loads(request["body"])["data"]["job_id"]))
        self.requests = len(got)


def _run_ours(
    client: Client,
    stack: Stack,
    hooks: _Hooks,
    jobs: int,
    label: str,
    *,
    on_submitted: Callable[[], None] = lambda: None,
) -> list[str]:
    """Submit ``jobs`` jobs with webhooks to ``hooks``; return once every webhook got a 2xx."""
    ids: list[str] = []
    for start in range(0, jobs, SUBMIT_CHUNK):
        specs = [
            {"request": {"prompt": f"{label} picture {i}"}, "webhook_url": hooks.url}
            for i in range(start, min(jobs, start + SUBMIT_CHUNK))
        ]
        ids += [record.job_id for record in client.submit_many(specs)]
    on_submitted()
    expected = set(ids)
    _wait_until(
        label,
        jobs,
        lambda: (hooks.poll(), len(expected & hooks.accepted))[1],
        lambda: _failed(stack),
        "webhooks delivered",
    )
    return ids


def _failed(stack: Stack) -> str | None:
    dead = stack.processes.failed()
    if not dead:
        return None
    logs = "\n".join(
        f"--- {name}:\n{tail(stack.run_dir / 'logs' / f'{name}.log')}" for name in dead
    )
    return f"stack processes exited: {', '.join(dead)}\n{logs}"


def _wait_until(
    label: str,
    total: int,
    done: Callable[[], int],
    broken: Callable[[], str | None],
    what: str,
) -> None:
    """Poll ``done()`` until it reaches ``total``; fail when a process died, nothing moved for
    STALL_S, or the whole deadline passed."""
    started = time.monotonic()
    deadline = started + 60 + 0.25 * total
    count, moved = 0, started
    while True:
        now_count = done()
        now = time.monotonic()
        if now_count >= total:
            return
        if now_count != count:
            count, moved = now_count, now
        problem = broken()
        if problem:
            msg = f"{label}: {count}/{total} {what}; {problem}"
            raise BenchError(msg)
        if now - moved > STALL_S:
            msg = f"{label}: stuck at {count}/{total} {what} for {STALL_S:g} s"
            raise BenchError(msg)
        if now > deadline:
            msg = f"{label}: only {count}/{total} {what} after {now - started:.0f} s"
            raise BenchError(msg)
        time.sleep(POLL_S)


def _idle(server: _PrivateRedis, idle_s: float) -> tuple[_Reading, _Reading]:
    idle_from = server.reading()
    time.sleep(idle_s)
    return idle_from, server.reading()


@dataclass(frozen=True)
class _Plan:
    run_dir: Path
    jobs: int
    concurrency: int
    idle_s: float
    warmup: int
    say: Callable[[str], None]
    redis_cpu: int | None = None


def _measure_ours(plan: _Plan) -> tuple[RunFigures, str]:
    run_dir, jobs, idle_s, warmup, say = (
        plan.run_dir,
        plan.jobs,
        plan.idle_s,
        plan.warmup,
        plan.say,
    )
    with contextlib.ExitStack() as cleanup:
        server = cleanup.enter_context(_PrivateRedis("redis-ours", run_dir, plan.redis_cpu))
        receiver = Receiver()
        cleanup.callback(receiver.stop)
        options = StackOptions(
            run_dir=run_dir / "ours",
            redis_url=server.url,
            force_private_redis=False,
            quota_rpm=0,  # neither the emulator's quota nor our limiter
            emulator_args=("--latency-ms", "0"),
            worker_concurrency=plan.concurrency,
            extra_env=OURS_ENV,
        )
        started = time.monotonic()
        stack = cleanup.enter_context(Stack(options))
        if stack.urls.get("redis") != server.url:
            msg = f"the stack is not on our private Redis: {stack.urls.get('redis')}"
            raise BenchError(msg)
        say(f"ours: stack up in {time.monotonic() - started:.1f} s; {warmup} warm-up jobs")
        client = cleanup.enter_context(Client(stack.settings()))
        _run_ours(client, stack, _Hooks(receiver, "/warm-up"), warmup, "warm-up")
        server.quiet(QUEUES)
        say(f"ours: idle for {idle_s:g} s")
        idle_from, before = _idle(server, idle_s)
        worker_log = stack.run_dir / "logs" / "worker.log"
        log_from = worker_log.stat().st_size if worker_log.exists() else 0
        say(f"ours: {jobs} jobs")
        hooks = _Hooks(receiver, "/whole-job")
        submitted_at: list[float] = []
        ids = _run_ours(
            client,
            stack,
            hooks,
            jobs,
            "whole-job",
            on_submitted=lambda: submitted_at.append(time.monotonic()),
        )
        server.quiet(QUEUES)
        after = server.reading()
        say(
            f"ours: submitted in {submitted_at[0] - before.at:.2f} s, all done in "
            f"{after.at - before.at:.2f} s"
        )
        records = []
        for start in range(0, len(ids), 1000):
            records += client.get_many(ids[start : start + 1000])
        statuses = Counter(r.status.value if r is not None else "missing" for r in records)
        unfinished = sum(1 for r in records if r is None or not r.is_terminal)
        if unfinished:
            msg = f"ours: every webhook came but {unfinished} jobs are not final: {statuses}"
            raise BenchError(msg)
        if statuses.get("succeeded", 0) != jobs:
            say(f"ours: not every job succeeded: {dict(statuses)}")
        deferred = 0
        if worker_log.exists():
            with worker_log.open("rb") as log:
                log.seek(log_from)
                deferred = log.read().count(b"webhook deferred")
        figures = _figures(
            "ours",
            jobs,
            idle_from,
            before,
            after,
            webhook_requests=hooks.requests,
            deferred_webhooks=deferred,
        )
        return figures, server.version


# -- the Celery no-op ------------------------------------------------------------------------


def _paced(count: int, per_s: float | None, send: Callable[[], Any]) -> list[Any]:
    """``send()`` ``count`` times, ``per_s`` a second (None: as fast as it goes)."""
    if per_s is None:
        return [send() for _ in range(count)]
    sent, started = [], time.monotonic()
    for number in range(count):
        wait_s = started + number / per_s - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)
        sent.append(send())
    return sent


def _measure_noop(plan: _Plan, *, events: bool, per_s: float | None = None) -> RunFigures:
    """The no-op's run: the measured tasks sent ``per_s`` a second (None: flat out)."""
    run_dir, jobs, concurrency, idle_s, warmup, say = (
        plan.run_dir,
        plan.jobs,
        plan.concurrency,
        plan.idle_s,
        plan.warmup,
        plan.say,
    )
    name = "no-op, events on" if events else "no-op, events off"
    tag = "noop-events" if events else "noop-quiet"
    if per_s is not None:
        name, tag = f"{name}, {per_s:.0f}/s", f"{tag}-paced"
    with contextlib.ExitStack() as cleanup:
        server = cleanup.enter_context(_PrivateRedis(f"redis-{tag}", run_dir, plan.redis_cpu))
        processes = ProcessGroup(run_dir / "logs")
        cleanup.callback(processes.stop_all)
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), path]) if path else str(REPO),
            URL_ENV: server.url,
            EVENTS_ENV: "1" if events else "0",
            CONCURRENCY_ENV: str(concurrency),
        }
        argv = python_module(
            "celery",
            "-A",
            "tests.bench.noop_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--hostname",
            f"{tag}@%h",
            "--without-mingle",
            "--without-gossip",
            *(["--events"] if events else []),
        )
        started = time.monotonic()
        worker = processes.spawn(
            tag,
            argv,
            env=env,
            ready=lambda: worker_answers(server.url, tag),
            timeout_s=60,
            cwd=run_dir,
        )
        say(f"{name}: worker up in {time.monotonic() - started:.1f} s; {warmup} warm-up tasks")
        app = make_app(server.url, events=events, concurrency=concurrency)
        cleanup.callback(app.close)
        task = app.tasks[NOOP_TASK]
        log_path = run_dir / "logs" / f"{tag}.log"

        def broken() -> str | None:
            if worker.poll() is None:
                return None
            return f"the worker exited with {worker.returncode}:\n{tail(log_path)}"

        def send_and_wait(count: int, label: str, rate: float | None = None) -> None:
            results = _paced(count, rate, task.apply_async)
            done = 0

            def collect() -> int:
                nonlocal done
                while done < count:
                    try:
                        value = results[done].get(timeout=POLL_S * 10)
                    except ResultTimeoutError:
                        return done
                    if value != 1:
                        msg = f"{label}: task {results[done].id} returned {value!r}"
                        raise BenchError(msg)
                    done += 1
                return done

            _wait_until(label, count, collect, broken, "results read")

        send_and_wait(warmup, f"{name} warm-up")
        server.quiet([CELERY_QUEUE])
        say(f"{name}: idle for {idle_s:g} s")
        idle_from, before = _idle(server, idle_s)
        say(f"{name}: {jobs} tasks")
        send_and_wait(jobs, name, per_s)
        server.quiet([CELERY_QUEUE])
        after = server.reading()
        say(f"{name}: all done in {after.at - before.at:.2f} s")
        return _figures(name, jobs, idle_from, before, after)


# -- the whole measurement -------------------------------------------------------------------


@contextlib.contextmanager
def _run_dir() -> Iterator[Path]:
    """A temporary directory for every file of the run: removed at the end, kept (and named)
    when the run failed, for its logs."""
    path = Path(tempfile.mkdtemp(prefix="bench-whole-job-"))
    try:
        yield path
    except Exception:
        print(f"whole_job: the logs are kept in {path}", file=sys.stderr)
        raise
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)


def measure(
    jobs: int = 1000,
    *,
    concurrency: int | None = None,
    idle_s: float = IDLE_S,
    warmup: int = WARMUP_JOBS,
    rounds: int = ROUNDS,
    redis_cpu: int | None = None,
    say: Callable[[str], None] | None = None,
) -> WholeJobFigures:
    """``rounds`` rounds of: ours, the no-op with task events at ours' rate and flat out, and
    the no-op without task events flat out, each on a fresh private Redis, with ``jobs`` jobs
    each; ``concurrency`` threads in the one worker process (the local stack's default when
    None); ``redis_cpu``: the one CPU every private Redis runs on (None: any). Returns the
    round with the median ratio, with every round's ratios."""
    if jobs < 1 or rounds < 1:
        msg = "jobs and rounds must be at least 1"
        raise ValueError(msg)
    threads = concurrency or StackOptions().worker_concurrency
    report = say or (lambda _line: None)
    measured = []
    for number in range(1, rounds + 1):
        report(f"round {number} of {rounds}")
        with _run_dir() as run_dir:
            plan = _Plan(run_dir, jobs, threads, idle_s, warmup, report, redis_cpu)
            ours, version = _measure_ours(plan)
            noop = _measure_noop(plan, events=True, per_s=ours.jobs_per_s)
            flat_out = _measure_noop(plan, events=True)
            quiet = _measure_noop(plan, events=False)
        measured.append(
            WholeJobFigures(
                jobs=jobs,
                concurrency=threads,
                redis_version=version,
                ours=ours,
                noop=noop,
                noop_flat_out=flat_out,
                noop_quiet=quiet,
                redis_cpu=redis_cpu,
            )
        )
    median = sorted(measured, key=lambda figures: figures.ratio)[len(measured) // 2]
    return dataclasses.replace(
        median,
        round_ratios=tuple(figures.ratio for figures in measured),
        round_flat_out_ratios=tuple(figures.ratio_flat_out for figures in measured),
    )


# -- printing --------------------------------------------------------------------------------


def _table(rows: list[tuple[str, ...]], right_from: int = 1) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i < right_from else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _top_table(run: RunFigures) -> list[str]:
    rows: list[tuple[str, ...]] = [("  command", "calls/job", "usec/job", "of Redis CPU")]
    for cost in run.top:
        share = cost.usec_per_job / (run.cpu_ms_per_job * 1000) if run.redis_cpu_ms else 0.0
        rows.append(
            (
                f"  {cost.command}",
                f"{cost.calls_per_job:.2f}",
                f"{cost.usec_per_job:.1f}",
                f"{share:.1%}",
            )
        )
    return _table(rows)


def _ratios(ratios: Sequence[float]) -> str:
    return ", ".join(f"{ratio:.2f}x" for ratio in ratios)


def report_lines(figures: WholeJobFigures) -> list[str]:
    """The table, the top commands, and one last line per goal."""
    runs = (
        ("ours: submit .. webhook 2xx", figures.ours),
        ("Celery no-op, events on, at ours' rate", figures.noop),
        ("Celery no-op, events on, flat out", figures.noop_flat_out),
        ("Celery no-op, events off, flat out", figures.noop_quiet),
    )
    rows: list[tuple[str, ...]] = [
        (
            "run",
            "jobs/s",
            "Redis CPU ms/job",
            "commands/job",
            "scripts/job",
            "round trips/job",
            "idle CPU ms/s",
            "idle cmds/s",
            "net of idle ms/job",
        )
    ]
    rows += [
        (
            label,
            f"{run.jobs_per_s:,.0f}",
            f"{run.cpu_ms_per_job:.3f}",
            f"{run.commands_per_job:.1f}",
            f"{run.scripts_per_job:.1f}",
            f"{run.reads_per_job:.1f}",
            f"{run.idle_cpu_ms_per_s:.2f}",
            f"{run.idle_commands_per_s:.1f}",
            f"{run.net_cpu_ms_per_job:.3f}",
        )
        for label, run in runs
    ]
    ours = figures.ours
    return [
        f"Redis CPU per whole job: {figures.jobs:,} jobs a run, one worker process with "
        f"{figures.concurrency} threads, a private Redis {figures.redis_version} per run"
        + ("" if figures.redis_cpu is None else f", on CPU {figures.redis_cpu} only"),
        *_table(rows),
        "",
        f"ours / no-op (events on, at ours' rate) in each round: {_ratios(figures.round_ratios)}",
        f"ours / no-op (events on, flat out) in the same rounds: "
        f"{_ratios(figures.round_flat_out_ratios)} (information)",
        "the median round:",
        f"ours / no-op (events on, at ours' rate): {figures.ratio:.2f}x "
        f"(net of idle: {figures.net_ratio:.2f}x)",
        f"ours / no-op (events on, flat out):      {figures.ratio_flat_out:.2f}x (information)",
        f"ours / no-op (events off, flat out):     {figures.ratio_quiet:.2f}x (information)",
        f"ours: {ours.webhook_requests:,} webhook requests for {ours.jobs:,} jobs, "
        f"{ours.deferred_webhooks:,} deliveries deferred (endpoint busy)",
        "",
        "Where ours spends Redis time, per job (top 10 by usec; a script's or EXEC's usec "
        "includes the commands it runs, which are listed too):",
        *_top_table(ours),
        "",
        "The Celery no-op (events on, at ours' rate), per job:",
        *_top_table(figures.noop),
        "",
        f"Redis CPU per whole job <= {figures.goal_ratio:g}x the Celery no-op's "
        "(events on, at ours' rate): "
        f"{ours.cpu_ms_per_job:.3f} vs {figures.noop.cpu_ms_per_job:.3f} ms, "
        f"{figures.ratio:.2f}x ... {'MET' if figures.met else 'NOT MET'}",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in each run")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--concurrency", type=int, default=None, help="worker threads")
    parser.add_argument("--idle-s", type=float, default=IDLE_S)
    parser.add_argument(
        "--redis-cpu", type=int, default=None, help="run each private Redis on this CPU only"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)
    try:
        figures = measure(
            args.jobs,
            concurrency=args.concurrency,
            idle_s=args.idle_s,
            rounds=args.rounds,
            redis_cpu=args.redis_cpu,
            say=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
        )
    except KeyboardInterrupt:
        print("whole_job: interrupted; everything it started is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    print()
    print("\n".join(report_lines(figures)))


if __name__ == "__main__":
    main()
