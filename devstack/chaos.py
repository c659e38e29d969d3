"""``make chaos``: kill anything, lose nothing, and count it.

A private stack (Redis with an append-only file, the emulator failing a part of its calls
retryably, moto's S3, image workers and a webhook worker) runs a batch of jobs while workers are
SIGKILLed and restarted, Redis is SIGKILLed once and restarted (it reloads its append-only
file), and the webhook receiver answers 503 for a while. Then it audits what a user would
check: every job final, no record gone, one S3 object per succeeded job and none for the
others, images Bedrock billed against jobs that got one (paid twice) and against the spend
counter, every final event's webhook delivered, and every worker back up. ``out/chaos.json``
holds the report.
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from devstack.receiver import Receiver
from devstack.stack import Stack, StackOptions
from imagegen.health import worker_answers
from imagegen.messages import JOB_QUEUES, WEBHOOK_QUEUE
from imagegen.records import JobRecord
from producer.client import Client
from producer.webhooks import WebhookVerificationError, verify

__all__ = ["ChaosPlan", "run_chaos"]

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
    "IMAGEGEN_VISIBILITY_TIMEOUT_S": "60",
    "IMAGEGEN_REDELIVERY_SWEEP_S": "5",
    "IMAGEGEN_DISPATCH_REDRIVE_GRACE_S": "10",
    "IMAGEGEN_WEBHOOK_HANDOFF_GRACE_S": "5",
    "IMAGEGEN_RETRY_BASE_S": "0.2",
    "IMAGEGEN_RETRY_CAP_S": "2",
    "IMAGEGEN_MAX_ATTEMPTS": "8",
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
}
RETRYABLE_FAULTS = ("internal", "unavailable", "model_timeout", "not_ready")


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


@dataclass
class _Events:
    kills: list[tuple[float, str]] = field(default_factory=list)
    redis_restarts: list[float] = field(default_factory=list)
    receiver_down: list[tuple[float, float]] = field(default_factory=list)


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
        self.stack = Stack(
            StackOptions(
                run_dir=run_dir,
                force_private_redis=True,
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

    # -- running -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        with self.stack:
            self.started = time.monotonic()
            with Client(self.stack.settings()) as client:
                job_ids = self._submit(client)
                chaos = threading.Thread(target=self._wreak, name="chaos", daemon=True)
                chaos.start()
                records = self._wait(client, job_ids)
                self.done.set()
                chaos.join(timeout=120)
                records = self._wait_for_webhooks(client, job_ids, records)
                return self._audit(client, job_ids, records)

    def _submit(self, client: Client) -> list[str]:
        url = self.receiver.url(HOOK_PATH)
        ids: list[str] = []
        for start in range(0, self.plan.jobs, SUBMIT_CHUNK):
            chunk = [
                {
                    "request": {"prompt": f"chaos job {n}: a lighthouse in a storm"},
                    "priority": "batch" if n % 4 == 0 else "interactive",
                    "webhook_url": url,
                    "metadata": {"n": n},
                }
                for n in range(start, min(start + SUBMIT_CHUNK, self.plan.jobs))
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
                self.events.redis_restarts.append(time.time())
                print(f"[{now:6.1f} s] Redis SIGKILLed, down {plan.redis_down_s:g} s", flush=True)
                self.stack.restart_redis(plan.redis_down_s, signal.SIGKILL)
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

    def _restart(self, name: str) -> None:
        try:
            self.stack.start_worker(name, self.workers[name])
        except Exception as e:
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
        lost_in_window, windows = self._window(self.events.kills)
        hooks = self._webhooks(client, found)
        down = [
            name
            for name in self.workers
            if not worker_answers(self.stack.env["IMAGEGEN_REDIS_URL"], name)
        ]
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
            "spend_counter_images": booked,
            "booked_as_lost_calls": lost_calls,
            "kept_window_ms": windows,
            **hooks,
            "kills": len(self.events.kills),
            "kills_by_worker": dict(Counter(name for _, name in self.events.kills)),
            "redis_restarts": len(self.events.redis_restarts),
            "workers_down_at_end": down,
            "never_final_ids": never_final[:20],
            "vanished_ids": vanished[:20],
        }
        report["goals_met"] = _goals(report)
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

    def _window(self, kills: list[tuple[float, str]]) -> tuple[int, dict[str, float]]:
        """From the workers' logs: attempts whose Bedrock call had started and whose image was
        not yet kept (or whose call had not yet ended) when their worker was killed, and how
        long the bought-to-kept window was (ms) for the images kept."""
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
            killed = [at for at, victim in kills if victim == name]
            lost += sum(
                1
                for key, at in calling.items()
                if any(at <= k and not (key in ended and ended[key] <= k) for k in killed)
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


def _goals(report: dict[str, Any]) -> bool:
    return (
        report["never_final"] == 0
        and report["vanished"] == 0
        and report["s3_duplicates"] == 0
        and report["s3_orphans"] == 0
        and report["webhooks_lost"] == 0
        and report["paid_twice"] <= report["calls_cut_by_kills"]
        # Every billed image is counted; a call whose worker died is counted as billed (Bedrock
        # bills what it generated), which can overcount by the lost calls it did not bill.
        and report["bedrock_billed_images"]
        <= report["spend_counter_images"]
        <= report["bedrock_billed_images"] + report["booked_as_lost_calls"]
        and not report["workers_down_at_end"]
    )


def print_report(report: dict[str, Any]) -> None:
    rows = [
        ("jobs by final status", ", ".join(f"{n} {s}" for s, n in report["statuses"].items())),
        ("never final / vanished", f"{report['never_final']} / {report['vanished']}"),
        (
            "S3 objects / duplicates / orphans",
            f"{report['s3_objects']} / {report['s3_duplicates']} / {report['s3_orphans']}",
        ),
        (
            "billed images / paid twice / calls cut by kills",
            f"{report['bedrock_billed_images']} / {report['paid_twice']} / "
            f"{report['calls_cut_by_kills']}",
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
        ("workers down at the end", ", ".join(report["workers_down_at_end"]) or "none"),
        ("elapsed s", str(report["elapsed_s"])),
        ("goals met", "yes" if report["goals_met"] else "NO"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def run_chaos(plan: ChaosPlan, out_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Run the plan, print the report and write ``{out_dir}/chaos.json``."""
    chaos = _Chaos(plan, run_dir)
    try:
        report = chaos.run()
    finally:
        chaos.receiver.stop()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "chaos.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return report
