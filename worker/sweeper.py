"""The sweeper: a thread in every worker process doing the maintenance store's work (due webhook
deliveries, jobs past their deadline, jobs nobody holds any more, trimming the dead-letter sets,
a sample of each model's quota and backlog every few seconds for the operator's chart, and the
Redis epoch against its mark in S3, to notice a Redis that came back with less than it had), one
process at a time by a lock in Redis.

Retries wait in the outbox sorted set, so a delay of hours is a score, not a Celery countdown
held by a worker (which the Redis visibility timeout would redeliver). The thread survives any
error of one sweep: it logs it and tries again at the next interval.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING

import redis as redis_lib
from botocore.exceptions import BotoCoreError, ClientError

from imagegen.epoch import MARK_BACKOFF_S, EpochWatch, Verdict
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore
from imagegen.store.maintenance import Maintenance
from imagegen.store.quota import QuotaStore
from imagegen.store.quota_history import QuotaHistory, QuotaSample
from imagegen.store.spend import ledger_ttl_s
from worker import metrics

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["OutboxSweeper"]

log = logging.getLogger("imagegen.sweeper")

_LOCK_INTERVALS = 5
# Trimming is cheap but need not run every second.
_TRIM_EVERY_SWEEPS = 60


class OutboxSweeper:
    def __init__(
        self, redis: Redis, settings: Settings, epoch_watch: EpochWatch | None = None
    ) -> None:
        self._epoch_watch = epoch_watch
        self._interval_s = settings.webhook_sweep_interval_s
        self._jobs = JobStore.from_settings(redis, settings)
        self._maintenance = Maintenance(
            redis,
            settings.job_retention_s,
            settings.webhook_handoff_grace_s,
            ledger_ttl_s(settings.spend_retention_days),
        )
        self._model_ids = list(settings.allowed_model_ids)
        self._quota = QuotaStore(redis, settings)
        self._dispatch = Dispatch(redis, settings)
        self._history = QuotaHistory(redis)
        self._token = uuid.uuid4().hex
        self._sweeps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> list[str]:
        """End jobs past their deadline and queue every due delivery (and now and then trim the
        dead letters), if this sweeper holds the lock; returns the ids of the deliveries queued."""
        lock_ms = round(self._interval_s * _LOCK_INTERVALS * 1000)
        if not self._maintenance.hold_lock(self._token, lock_ms):
            return []
        self.watch_epoch()
        expired = self._jobs.expire_due()
        if expired:
            log.info("jobs expired past their deadline", extra={"jobs": len(expired)})
        redriven = self._jobs.redrive_due()
        if redriven:
            log.warning("jobs nobody held put back to wait", extra={"jobs": redriven[:20]})
        ids = self._maintenance.send_due_deliveries()
        if ids:
            log.info("due webhook deliveries queued", extra={"deliveries": len(ids)})
        if self._sweeps % _TRIM_EVERY_SWEEPS == 0:
            trimmed = self._maintenance.trim()
            if trimmed.jobs or trimmed.deliveries or trimmed.endpoints:
                log.info("dead letters trimmed", extra=vars(trimmed))
        self.sample_quota()
        self._sweeps += 1
        return ids

    def watch_epoch(self) -> Verdict | None:
        """Compare Redis with its mark in S3 when due; a loss is logged and counted once."""
        watch = self._epoch_watch
        if watch is None or not watch.due():
            return None
        try:
            verdict = watch.check()
        except (ClientError, BotoCoreError) as e:
            watch.back_off()
            log.warning(
                "the Redis epoch's mark in S3 cannot be read or written; trying again later",
                extra={"error": str(e)[:200], "retry_in_s": MARK_BACKOFF_S},
            )
            return None
        if verdict.lost:
            metrics.REDIS_LOSSES.labels(verdict.kind).inc()
            log.error(
                f"Redis lost data: {verdict.describe()}; `imagegen recover` lists the lost jobs "
                "whose images are in S3",
                extra={
                    "kind": verdict.kind,
                    "lost_submissions": verdict.lost_submissions,
                    "lost_epoch": verdict.mark.epoch if verdict.mark else None,
                },
            )
        return verdict

    def sample_quota(self) -> list[QuotaSample]:
        """Record each model's quota and backlog, once per interval for the whole fleet."""
        if not self._history.take_slot():
            return []
        return self._history.record(
            self._quota.statuses(self._model_ids),
            self._dispatch.snapshot(self._model_ids, busiest=1),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval_s * 2 + 1)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.sweep_once()
            except redis_lib.RedisError:
                log.warning("sweeper cannot reach Redis; trying again", exc_info=True)
            except Exception:
                log.exception("sweep failed; trying again")
