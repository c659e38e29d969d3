"""``make chaos``: kill anything, lose nothing, and count it.

A private stack (Redis with an append-only file, the emulator failing a part of its calls
retryably, moto's S3, image workers and a webhook worker) runs a batch of jobs while workers are
SIGKILLed and restarted, Redis is SIGKILLed once and restarted (it reloads its append-only
file), and the webhook receiver answers 503 for a while. Then it audits what a user would
check: every job final, no record gone, one S3 object per succeeded job and none for the
others, images Bedrock billed against jobs that got one (paid twice) and against the spend
counter, every final event's webhook delivered, and every worker back up. ``out/chaos.json``
holds the report.

``make chaos-failover`` runs the same audit with a Redis that fails over instead
(``ChaosPlan.failover``): a primary, its replicas and three Sentinels (``devstack.sentinel``),
every process given the ``redis+sentinel://`` URL, jobs submitted while the primary is SIGKILLed
(``kill``) or cut off by a TCP proxy while it runs (``partition``) and a replica is promoted. A
submit counts as accepted only once it returned; the report adds how long the promotion took and
how long until jobs finished again. ``out/chaos-failover.json`` holds it.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import statistics
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import boto3
import redis

from devstack.receiver import Receiver
from devstack.sentinel import SentinelCluster
from devstack.stack import Stack, StackOptions
from imagegen.health import worker_answers
from imagegen.messages import JOB_QUEUES, WEBHOOK_QUEUE
from imagegen.records import JobRecord
from producer.client import Client
from producer.webhooks import WebhookVerificationError, verify

__all__ = ["FAILOVER_PLANS", "ChaosPlan", "run_chaos", "run_failover_chaos"]

HOOK_PATH = "/hooks"
SUBMIT_CHUNK = 200
POLL_S = 1.0
# Timeouts short enough that a killed worker's job comes back within seconds, not minutes.
CHAOS_ENV = {
    "IMAGEGEN_BEDROCK_CONNECT_TIMEOUT_S": "2",
    "IMAGEGEN_BEDROCK_READ_TIMEOUT_S": "10",
    "IMAGEGEN_S3_CONNECT_TIMEOUT_S": "2",
    "IMAGEGEN_S3_READ_TIMEOUT_S": "5",
    "IMAGEGEN_S3_UPLOAD_ATTEMPTS": "2",
    "IMAGEGEN_TASK_SOFT_TIME_LIMIT_S": "25",
    "IMAGEGEN_TASK_TIME_LIMIT_S": "30",
    "IMAGEGEN_DISPATCH_REDRIVE_GRACE_S": "10",
    "IMAGEGEN_WEBHOOK_HANDOFF_GRACE_S": "5",
    "IMAGEGEN_RETRY_BASE_S": "0.2",
    "IMAGEGEN_RETRY_CAP_S": "2",
    "IMAGEGEN_MAX_ATTEMPTS": "8",
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
}
RETRYABLE_FAULTS = ("internal", "unavailable", "model_timeout", "not_ready")
# Jobs must finish again this soon after a failover began (the Sentinels take ~2-5 s).
FLOW_AGAIN_GOAL_S = 30.0


@dataclass(frozen=True)
class ChaosPlan:
    jobs: int = 1000
    image_workers: int = 3
    kill_every_s: float = 4.0
    max_kills: int = 10_000
    fault_rate: float = 0.25
    latency_ms: float = 300.0
    latency_jitter_ms: float = 200.0
    quota_rpm: float = 1200.0
    redis_down_at_s: float = 20.0
    redis_down_s: float = 2.0
    receiver_down_at_s: float = 10.0
    receiver_down_s: float = 60.0
    deadline_s: float = 780.0
    seed: int = 7
    # "": one Redis, SIGKILLed and restarted at ``redis_down_at_s``. "kill" or "partition": a
    # primary with ``replicas`` and three Sentinels; at ``redis_down_at_s`` the primary is
    # SIGKILLed, or cut off for ``redis_down_s`` by a TCP proxy, and a replica promoted.
    failover: Literal["", "kill", "partition"] = ""
    replicas: int = 2
    # Jobs are submitted in chunks over this long (0: all before the chaos starts).
    submit_over_s: float = 0.0
    submit_chunk: int = SUBMIT_CHUNK


@dataclass
class _Events:
    kills: list[tuple[float, str]] = field(default_factory=list)
    # Workers that exited on their own, restarted as a supervisor (Kubernetes) would.
    exits: list[tuple[float, str]] = field(default_factory=list)
    redis_restarts: list[float] = field(default_factory=list)
    receiver_down: list[tuple[float, float]] = field(default_factory=list)
    failover_at: float | None = None  # wall clock: the primary killed or cut off
    promoted_at: float | None = None  # every Sentinel names the promoted replica
    healed_at: float | None = None  # the partition ended
    old_primary_demoted: bool | None = None  # the partitioned primary became a replica


# ``make chaos-failover``: 1,000 jobs submitted over a minute, the primary lost 20 s in; no worker
# is killed (the Redis failover is what is tested), Bedrock still fails some calls and the
# receiver refuses webhooks for a while.
FAILOVER_PLANS = {
    mode: ChaosPlan(
        jobs=1000,
        image_workers=3,
        max_kills=0,
        fault_rate=0.1,
        quota_rpm=1500.0,
        redis_down_at_s=20.0,
        redis_down_s=40.0,  # a partition outlasts the goal: jobs must flow without its end
        receiver_down_at_s=5.0,
        receiver_down_s=15.0,
        deadline_s=420.0,
        failover=mode,
        submit_over_s=60.0,
        submit_chunk=10,
    )
    for mode in ("kill", "partition")
}


def _emulator_args(plan: ChaosPlan) -> list[str]:
    rate = plan.fault_rate / len(RETRYABLE_FAULTS)
    args = [
        "--latency-ms",
        f"{plan.latency_ms:g}",
        "--latency-jitter-ms",
        f"{plan.latency_jitter_ms:g}",
        "--fault-seed",
        str(plan.seed),
    ]
    for kind in RETRYABLE_FAULTS:
        args += [f"--{kind.replace('_', '-')}-rate", f"{rate:g}"]
    return args


class _Chaos:
    def __init__(self, plan: ChaosPlan, run_dir: Path) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.receiver = Receiver()
        self.workers = {f"img{n}": ",".join(JOB_QUEUES) for n in range(1, plan.image_workers + 1)}
        self.workers["hooks"] = WEBHOOK_QUEUE
        self.cluster = (
            SentinelCluster(
                run_dir / "redis", replicas=plan.replicas, proxied=plan.failover == "partition"
            )
            if plan.failover
            else None
        )
        self.stack = Stack(
            StackOptions(
                run_dir=run_dir,
                redis_url=self.cluster.url if self.cluster else None,
                force_private_redis=self.cluster is None,
                redis_appendonly=True,
                quota_rpm=plan.quota_rpm,
                quota_burst=10,
                worker_concurrency=8,
                workers=tuple(self.workers.items()),
                emulator_args=_emulator_args(plan),
                extra_env=CHAOS_ENV,
            )
        )
        self.events = _Events()
        self.done = threading.Event()
        self.restarting: set[str] = set()
        self.started = 0.0
        self.submitter: _Submitter | None = None

    # -- running -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        if self.cluster is None:
            return self._run()
        with self.cluster:
            return self._run()

    def _run(self) -> dict[str, Any]:
        with self.stack:
            self.started = time.monotonic()
            with Client(self.stack.settings()) as client:
                if self.plan.submit_over_s > 0:
                    self.submitter = _Submitter(client, self.plan, self._spec)
                    self.submitter.start()
                    job_ids = None
                else:
                    job_ids = self._submit(client)
                chaos = threading.Thread(target=self._wreak, name="chaos", daemon=True)
                chaos.start()
                if self.submitter is not None:
                    self.submitter.join(timeout=self.plan.deadline_s)
                    job_ids = list(self.submitter.accepted)
                    print(
                        f"[{self.elapsed():6.1f} s] {len(job_ids)} jobs accepted, "
                        f"{len(self.submitter.refusals)} submits refused and retried",
                        flush=True,
                    )
                assert job_ids is not None
                records = self._wait(client, job_ids)
                self.done.set()
                chaos.join(timeout=120)
                records = self._wait_for_webhooks(client, job_ids, records)
                return self._audit(client, job_ids, records)

    def _spec(self, n: int) -> dict[str, Any]:
        return {
            "request": {"prompt": f"chaos job {n}: a lighthouse in a storm"},
            "priority": "batch" if n % 4 == 0 else "interactive",
            "webhook_url": self.receiver.url(HOOK_PATH),
            "metadata": {"n": n},
        }

    def _submit(self, client: Client) -> list[str]:
        ids: list[str] = []
        for start in range(0, self.plan.jobs, self.plan.submit_chunk):
            chunk = [
                self._spec(n)
                for n in range(start, min(start + self.plan.submit_chunk, self.plan.jobs))
            ]
            ids += [record.job_id for record in client.submit_many(chunk)]
        print(f"submitted {len(ids)} jobs", flush=True)
        return ids

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _wreak(self) -> None:
        """Kill a worker every few seconds (and restart it); stop Redis once; take the
        receiver down for a while; until the jobs are final."""
        plan, next_kill = self.plan, self.plan.kill_every_s
        redis_done = receiver_down = receiver_done = False
        while not self.done.is_set():
            now = self.elapsed()
            if not receiver_down and now >= plan.receiver_down_at_s:
                self.receiver.script(HOOK_PATH, [(503, {"Retry-After": "1"}, 0.0)])
                receiver_down, down_at = True, time.time()
            if (
                receiver_down
                and not receiver_done
                and now >= plan.receiver_down_at_s + plan.receiver_down_s
            ):
                self.receiver.script(HOOK_PATH, [(200, {}, 0.0)])
                receiver_done = True
                self.events.receiver_down.append((down_at, time.time()))
            if not redis_done and now >= plan.redis_down_at_s:
                redis_done = True
                if self.cluster is not None:
                    threading.Thread(target=self._fail_over, name="failover", daemon=True).start()
                else:
                    self.events.redis_restarts.append(time.time())
                    print(
                        f"[{now:6.1f} s] Redis SIGKILLed, down {plan.redis_down_s:g} s",
                        flush=True,
                    )
                    self.stack.restart_redis(plan.redis_down_s, signal.SIGKILL)
            self._restart_exited()
            up = sorted(set(self.workers) - self.restarting)
            if now >= next_kill and up and len(self.events.kills) < plan.max_kills:
                name = self.rng.choice(up)
                self.events.kills.append((time.time(), name))
                self.stack.processes.stop(name, sig=signal.SIGKILL, grace_s=2)
                self.restarting.add(name)
                threading.Thread(target=self._restart, args=(name,), daemon=True).start()
                next_kill = now + plan.kill_every_s
            self.done.wait(0.2)
        deadline = time.monotonic() + 90
        while self.restarting and time.monotonic() < deadline:
            time.sleep(0.2)
        if receiver_down and not receiver_done:
            self.receiver.script(HOOK_PATH, [(200, {}, 0.0)])
            self.events.receiver_down.append((down_at, time.time()))

    def _restart_exited(self) -> None:
        for name in sorted(set(self.workers) - self.restarting):
            if not self.stack.processes.running(name):
                print(f"[{self.elapsed():6.1f} s] {name} exited on its own; restarted", flush=True)
                self.events.exits.append((time.time(), name))
                self.restarting.add(name)
                threading.Thread(target=self._restart, args=(name,), daemon=True).start()

    def _fail_over(self) -> None:
        """Lose the primary (SIGKILL, or a partition healed ``redis_down_s`` later) and wait
        until the Sentinels promoted a replica."""
        assert self.cluster is not None
        cluster, events = self.cluster, self.events
        events.failover_at = time.time()
        if self.plan.failover == "kill":
            old = cluster.kill_primary()
            what = "SIGKILLed"
        else:
            old = cluster.partition_primary()
            what = f"cut off for {self.plan.redis_down_s:g} s"
        print(f"[{self.elapsed():6.1f} s] Redis primary :{old} {what}", flush=True)
        try:
            new = cluster.wait_for_promotion(old, timeout_s=60)
        except Exception as e:
            print(f"no replica was promoted: {e}", flush=True)
            return
        events.promoted_at = time.time()
        print(
            f"[{self.elapsed():6.1f} s] replica :{new} promoted after "
            f"{events.promoted_at - events.failover_at:.1f} s",
            flush=True,
        )
        if self.plan.failover != "partition":
            return
        time.sleep(max(0.0, events.failover_at + self.plan.redis_down_s - time.time()))
        cluster.heal_partition()
        events.healed_at = time.time()
        print(f"[{self.elapsed():6.1f} s] partition healed", flush=True)
        old_server = cluster.client(cluster.redis_ports[0])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.done.is_set():
            try:
                if old_server.info("replication")["role"] == "slave":
                    events.old_primary_demoted = True
                    return
            except redis.RedisError:
                pass
            time.sleep(0.5)
        events.old_primary_demoted = False

    def _restart(self, name: str) -> None:
        try:
            self.stack.start_worker(name, self.workers[name])
        except Exception as e:
            # Started, but its first ping was cut (a reconnect): it may answer the next.
            if not (self.stack.processes.running(name) and self._answers(name)):
                print(f"{name} did not come back: {e}", flush=True)
        finally:
            self.restarting.discard(name)

    def _wait(self, client: Client, job_ids: list[str]) -> list[JobRecord | None]:
        last = ""
        while True:
            records = self._read(client, job_ids)
            final = sum(1 for r in records if r is not None and r.is_terminal)
            line = f"{final}/{len(job_ids)} final, {len(self.events.kills)} kills"
            if line != last:
                print(f"[{self.elapsed():6.1f} s] {line}", flush=True)
                last = line
            if final == len(job_ids) or self.elapsed() > self.plan.deadline_s:
                return records
            time.sleep(POLL_S)

    def _read(self, client: Client, job_ids: list[str]) -> list[JobRecord | None]:
        try:
            return client.get_many(job_ids)
        except Exception:
            return [None] * len(job_ids)

    def _wait_for_webhooks(
        self, client: Client, job_ids: list[str], records: list[JobRecord | None]
    ) -> list[JobRecord | None]:
        expected = {(r.job_id, f"job.{r.status.value}") for r in records if r and r.is_terminal}
        while self.elapsed() < self.plan.deadline_s:
            accepted = {(e["job_id"], e["type"]) for e in self._received() if e["accepted"]}
            if expected <= accepted:
                break
            time.sleep(POLL_S)
        return self._read(client, job_ids)

    def _received(self) -> list[dict[str, Any]]:
        found = []
        for request in self.receiver.received(HOOK_PATH):
            try:
                body = json.loads(request["body"])
            except ValueError:
                continue
            headers = {k.lower(): v for k, v in request["headers"].items()}
            found.append(
                {
                    "job_id": body["data"]["job_id"],
                    "type": body["type"],
                    "webhook_id": headers.get("webhook-id"),
                    "accepted": 200 <= int(request.get("status", 200)) < 300,
                    "request": request,
                }
            )
        return found

    # -- auditing ----------------------------------------------------------------------------

    def _audit(
        self, client: Client, job_ids: list[str], records: list[JobRecord | None]
    ) -> dict[str, Any]:
        found = {r.job_id: r for r in records if r is not None}
        statuses = Counter(r.status.value for r in found.values())
        never_final = [j for j, r in found.items() if not r.is_terminal]
        vanished = [j for j in job_ids if j not in found]
        succeeded = {j for j, r in found.items() if r.status.value == "succeeded"}
        objects = self._objects(client)
        per_job = Counter(objects)
        billed = self._billed()
        booked = sum(row.images for row in client.spend())
        lost_calls = int(sum(c.value for c in client.stats.counters() if c.kind == "lost_calls"))
        ended = self.events.kills + self.events.exits
        lost_in_window, windows = self._window([(at, at, name) for at, name in ended])
        failover = self._failover_report(found)
        hooks = self._webhooks(client, found)
        down = [name for name in self.workers if not self._answers(name)]
        report = {
            "plan": asdict(self.plan),
            "elapsed_s": round(self.elapsed(), 1),
            "jobs": len(job_ids),
            "statuses": dict(sorted(statuses.items())),
            "never_final": len(never_final),
            "vanished": len(vanished),
            "s3_objects": len(objects),
            "s3_duplicates": sum(n - 1 for n in per_job.values() if n > 1),
            "s3_orphans": sum(1 for j in per_job if j not in succeeded),
            "succeeded_without_object": len(succeeded - set(per_job)),
            "bedrock_billed_images": billed,
            "paid_twice": billed - len(succeeded),
            "calls_cut_by_kills": lost_in_window,
            "calls_cut_by_failover": failover.pop("calls_cut"),
            "spend_counter_images": booked,
            "booked_as_lost_calls": lost_calls,
            "kept_window_ms": windows,
            **hooks,
            "kills": len(self.events.kills),
            "kills_by_worker": dict(Counter(name for _, name in self.events.kills)),
            "worker_exits": len(self.events.exits),
            "worker_exits_by_worker": dict(Counter(name for _, name in self.events.exits)),
            "redis_restarts": len(self.events.redis_restarts),
            **failover,
            "workers_down_at_end": down,
            "never_final_ids": never_final[:20],
            "vanished_ids": vanished[:20],
        }
        report["goals"] = _goals(report)
        report["goals_met"] = all(report["goals"].values())
        return report

    def _answers(self, name: str, tries: int = 3) -> bool:
        """Whether the worker answers a ping (a ping cut by a reconnect is tried again)."""
        for _ in range(tries):
            try:
                if worker_answers(self.stack.env["IMAGEGEN_REDIS_URL"], name):
                    return True
            except Exception as e:
                print(f"pinging {name}: {type(e).__name__}: {e}", flush=True)
            time.sleep(1)
        return False

    def _failover_report(self, found: dict[str, JobRecord]) -> dict[str, Any]:
        """When the primary went, how long the promotion took, how long until a job finished
        again, and the Bedrock calls in flight meanwhile (their results may be paid twice)."""
        events = self.events
        if not self.plan.failover:
            return {"calls_cut": 0}
        report: dict[str, Any] = {
            "failover": self.plan.failover,
            "promoted_after_s": None,
            "jobs_flow_again_after_s": None,
            "old_primary_demoted": events.old_primary_demoted,
            "calls_cut": 0,
        }
        if events.failover_at is None:
            return report
        if events.promoted_at is not None:
            report["promoted_after_s"] = round(events.promoted_at - events.failover_at, 2)
        # Jobs flow again with the first finished once a replica was promoted: one finished
        # just after the primary was lost may be a finish that raced the loss.
        flowing_from = events.promoted_at or events.failover_at
        finished_after = sorted(
            r.finished_at.timestamp()
            for r in found.values()
            if r.finished_at is not None and r.finished_at.timestamp() > flowing_from
        )
        flowing_at = finished_after[0] if finished_after else None
        if flowing_at is not None:
            report["jobs_flow_again_after_s"] = round(flowing_at - events.failover_at, 2)
        report["submits_refused"] = len(self.submitter.refusals) if self.submitter else 0
        report["submit_refusals"] = dict(Counter(self.submitter.refusals)) if self.submitter else {}
        outage_end = flowing_at or time.time()
        report["calls_cut"], _ = self._window([(events.failover_at, outage_end, None)])
        return report

    def _objects(self, client: Client) -> list[str]:
        settings = client.settings
        s3 = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_region
        )
        names = []
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=settings.s3_bucket, Prefix=settings.s3_prefix.strip("/") + "/"
        ):
            names += [
                item["Key"].rsplit("/", 1)[-1].split(".")[0]
                for item in page.get("Contents", [])
                # Not an image: the service's own objects (_imagegen/, _doctor/).
                if "/_" not in item["Key"]
            ]
        return names

    def _billed(self) -> int:
        """Images the emulator generated, so billed (whoever got them)."""
        stats_url = self.stack.urls["bedrock"] + "/_emulator/stats"
        with urllib.request.urlopen(stats_url, timeout=5) as answer:  # noqa: S310 (http only)
            return int(json.load(answer)["generated"])

    def _window(self, cuts: list[tuple[float, float, str | None]]) -> tuple[int, dict[str, float]]:
        """From the workers' logs: attempts whose Bedrock call had started by the end of a cut
        (a worker killed: an instant; Redis gone: until jobs finished again) and whose image
        was not yet kept (or whose call had not yet ended) when it began, on the worker cut
        (None: every worker); and how long the bought-to-kept window was (ms) for the images
        kept."""
        lost, windows = 0, []
        for name in self.workers:
            path = self.stack.processes.log_dir / f"{name}.log"
            calling: dict[tuple[str, int], float] = {}
            ended: dict[tuple[str, int], float] = {}
            for line in path.read_text(errors="replace").splitlines():
                if not line.startswith("{") or '"job_id"' not in line:
                    continue
                entry = json.loads(line)
                key = (entry.get("job_id", ""), int(entry.get("attempt") or 0))
                at = datetime.fromisoformat(entry["ts"]).timestamp()
                if entry["msg"] == "job calling Bedrock":
                    calling[key] = at
                elif entry["msg"] == "job image kept":
                    ended[key] = at
                    windows.append(float(entry.get("window_ms", 0)))
                elif key in calling and entry["msg"] != "job image bought":
                    ended.setdefault(key, at)  # retried, failed, filtered, finished...
            spans = [(start, end) for start, end, victim in cuts if victim in (None, name)]
            lost += sum(
                1
                for key, at in calling.items()
                if any(
                    at <= end and not (key in ended and ended[key] <= start) for start, end in spans
                )
            )
        summary = {}
        if windows:
            ordered = sorted(windows)
            summary = {
                "p50": round(statistics.median(ordered), 1),
                "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
                "max": round(ordered[-1], 1),
            }
        return lost, summary

    def _webhooks(self, client: Client, found: dict[str, JobRecord]) -> dict[str, Any]:
        received = self._received()
        secrets = client.signing_secrets.active()
        verified = 0
        for item in received:
            request = item["request"]
            try:
                verify(request["headers"], request["body"], secrets)
                verified += 1
            except WebhookVerificationError:
                pass
        # A webhook-id answered 2xx more than once was delivered twice (retries of refused
        # attempts carry the same id, and are not duplicates).
        accepted = [item for item in received if item["accepted"]]
        ids = Counter(item["webhook_id"] for item in accepted)
        final = {(j, f"job.{r.status.value}") for j, r in found.items() if r.is_terminal}
        delivered = {(item["job_id"], item["type"]) for item in accepted}
        return {
            "webhooks_final_events": len(final),
            "webhooks_delivered": len(final & delivered),
            "webhooks_lost": len(final - delivered),
            "webhooks_duplicate_ids": sum(n - 1 for n in ids.values() if n > 1),
            "webhooks_requests": len(received),
            "webhooks_verified": verified,
        }


def _goals(report: dict[str, Any]) -> dict[str, bool]:
    """Each goal, by the line it prints, and whether the run met it."""
    billed, counted = report["bedrock_billed_images"], report["spend_counter_images"]
    cut = report["calls_cut_by_kills"] + report["calls_cut_by_failover"]
    goals = {
        "0 accepted jobs lost": report["vanished"] == 0,
        "0 jobs stuck (every job final)": report["never_final"] == 0,
        "one S3 object per succeeded job (no duplicate, no orphan)": (
            report["s3_duplicates"],
            report["s3_orphans"],
            report["succeeded_without_object"],
        )
        == (0, 0, 0),
        "paid twice only by calls cut in flight": report["paid_twice"] <= cut,
        # Every billed image is counted; a call whose worker died is counted as billed (Bedrock
        # bills what it generated), which can overcount by the lost calls it did not bill.
        "spend never below what was billed": (
            billed <= counted <= billed + report["booked_as_lost_calls"]
        ),
        "0 webhooks lost": report["webhooks_lost"] == 0,
        "every worker up at the end": not report["workers_down_at_end"],
        "no worker exited on its own": report["worker_exits"] == 0,
    }
    if "failover" in report:
        flow = report["jobs_flow_again_after_s"]
        goals[f"jobs flow again within {FLOW_AGAIN_GOAL_S:g} s of the failover"] = (
            flow is not None and flow <= FLOW_AGAIN_GOAL_S
        )
    return goals


def print_report(report: dict[str, Any]) -> None:
    rows = [
        ("jobs by final status", ", ".join(f"{n} {s}" for s, n in report["statuses"].items())),
        ("never final / vanished", f"{report['never_final']} / {report['vanished']}"),
        (
            "S3 objects / duplicates / orphans",
            f"{report['s3_objects']} / {report['s3_duplicates']} / {report['s3_orphans']}",
        ),
        (
            "billed images / paid twice / calls cut by kills and exits, by the failover",
            f"{report['bedrock_billed_images']} / {report['paid_twice']} / "
            f"{report['calls_cut_by_kills']}, {report['calls_cut_by_failover']}",
        ),
        (
            "spend counter images (of them booked as lost calls)",
            f"{report['spend_counter_images']} ({report['booked_as_lost_calls']})",
        ),
        ("bought-to-kept window ms", json.dumps(report["kept_window_ms"])),
        (
            "webhooks final / delivered / lost / duplicate ids",
            f"{report['webhooks_final_events']} / {report['webhooks_delivered']} / "
            f"{report['webhooks_lost']} / {report['webhooks_duplicate_ids']}",
        ),
        ("kills / Redis restarts", f"{report['kills']} / {report['redis_restarts']}"),
        (
            "workers exited on their own (restarted)",
            f"{report['worker_exits']} {json.dumps(report['worker_exits_by_worker'])}",
        ),
    ]
    if "failover" in report:
        rows += [
            (
                "failover: primary lost by",
                "SIGKILL" if report["failover"] == "kill" else "partition (TCP proxy)",
            ),
            ("replica promoted after s", str(report["promoted_after_s"])),
            ("jobs flow again after s", str(report["jobs_flow_again_after_s"])),
            (
                "submits refused meanwhile (retried)",
                f"{report['submits_refused']} {json.dumps(report['submit_refusals'])}",
            ),
        ]
        if report["failover"] == "partition":
            rows.append(("old primary a replica after", str(report["old_primary_demoted"])))
    rows += [
        ("workers down at the end", ", ".join(report["workers_down_at_end"]) or "none"),
        ("elapsed s", str(report["elapsed_s"])),
    ]
    rows += [(goal, "MET" if met else "NOT MET") for goal, met in report["goals"].items()]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def run_chaos(plan: ChaosPlan, out_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Run the plan, print the report and write ``{out_dir}/chaos.json``."""
    report = _run_plan(plan, run_dir)
    _write(out_dir / "chaos.json", report)
    print_report(report)
    return report


def run_failover_chaos(plans: dict[str, ChaosPlan], out_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Run each failover plan (by its name) on a fresh cluster and stack, print each report
    and write them all to ``{out_dir}/chaos-failover.json``."""
    runs = {}
    for name, plan in plans.items():
        print(f"== failover by {name}: {plan.jobs} jobs", flush=True)
        runs[name] = _run_plan(plan, run_dir / name)
        print_report(runs[name])
    report = {"runs": runs, "goals_met": all(r["goals_met"] for r in runs.values())}
    _write(out_dir / "chaos-failover.json", report)
    return report


def _run_plan(plan: ChaosPlan, run_dir: Path) -> dict[str, Any]:
    # A run starts from nothing: an earlier run's Redis files would be loaded again (its jobs,
    # under the same ids) and its logs read into this audit.
    shutil.rmtree(run_dir, ignore_errors=True)
    chaos = _Chaos(plan, run_dir)
    try:
        return chaos.run()
    finally:
        chaos.receiver.stop()


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


class _Submitter(threading.Thread):
    """Submits ``plan.jobs`` jobs in chunks spread over ``plan.submit_over_s``, as a caller
    would: a chunk refused (an error, Redis gone, no replica confirming) is submitted again
    with the same job ids until it is accepted; a job counts as accepted only once its submit
    returned."""

    def __init__(
        self, client: Client, plan: ChaosPlan, spec: Callable[[int], dict[str, Any]]
    ) -> None:
        super().__init__(name="submitter", daemon=True)
        self.client, self.plan, self.spec = client, plan, spec
        # Past this, a chunk still refused is left unsubmitted (and reported short).
        self.give_up_at = time.monotonic() + plan.deadline_s / 2
        self.accepted: list[str] = []
        self.refusals: list[str] = []

    def run(self) -> None:
        plan = self.plan
        started = time.monotonic()
        chunks = range(0, plan.jobs, plan.submit_chunk)
        for index, first in enumerate(chunks):
            due = started + plan.submit_over_s * index / len(chunks)
            time.sleep(max(0.0, due - time.monotonic()))
            ids = range(first, min(first + plan.submit_chunk, plan.jobs))
            specs = [{**self.spec(n), "job_id": f"chaos-{plan.seed}-{n}"} for n in ids]
            while time.monotonic() < self.give_up_at:
                try:
                    records = self.client.submit_many(specs)
                except Exception as e:
                    self.refusals.append(type(e).__name__)
                    time.sleep(0.2)
                    continue
                self.accepted += [record.job_id for record in records]
                break
