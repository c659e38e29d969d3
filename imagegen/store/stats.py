"""The fleet's figures as Redis holds them: the counters the transitions keep, and the queues'
depth and age. Read by the API's ``/metrics``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from imagegen.messages import QUEUES, WEBHOOK_QUEUE
from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Counter", "QueueSnapshot", "Stats"]


@dataclass(frozen=True)
class Counter:
    """One fleet-wide counter: ``kind`` (jobs, images, retries, webhooks) and its labels."""

    kind: str
    labels: tuple[str, ...]
    value: float


@dataclass(frozen=True)
class QueueSnapshot:
    depth: dict[str, int]
    # Seconds since the job (or, on the webhooks queue, the event) behind the oldest message.
    oldest_age_s: dict[str, float]
    jobs_open: int
    dead_letter_jobs: int
    dead_letter_deliveries: int
    outbox_pending: int


class Stats:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def counters(self) -> list[Counter]:
        stats = cast("dict[str, str]", self._redis.hgetall(keys.STATS_KEY))
        found = []
        for field, raw in sorted(stats.items()):
            kind, *labels = field.split("|")
            found.append(Counter(kind, tuple(labels), float(raw)))
        return found

    def queues(self) -> QueueSnapshot:
        pipe = self._redis.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
            pipe.lindex(queue, -1)
        pipe.zcard(keys.OPEN_KEY)
        pipe.zcard(keys.DLQ_KEY)
        pipe.zcard(keys.WEBHOOKS_DLQ_KEY)
        pipe.zcard(keys.WEBHOOKS_DUE_KEY)
        replies = pipe.execute()
        now_s = time.time()
        depth, oldest = {}, {}
        for index, queue in enumerate(QUEUES):
            length, tail = replies[2 * index], replies[2 * index + 1]
            depth[queue] = int(length)
            oldest[queue] = self._age_s(queue, tail, now_s) if tail else 0.0
        waiting, dlq, webhook_dlq, outbox = replies[2 * len(QUEUES) :]
        return QueueSnapshot(depth, oldest, int(waiting), int(dlq), int(webhook_dlq), int(outbox))

    def _age_s(self, queue: str, raw_message: Any, now_s: float) -> float:
        """How long the record behind a queued message has existed (0 when it cannot be told):
        the job's, or on the webhooks queue the delivery's."""
        try:
            task_id = str(json.loads(raw_message)["headers"]["id"])
        except (ValueError, KeyError, TypeError):
            return 0.0
        key = keys.webhook_key(task_id) if queue == WEBHOOK_QUEUE else keys.job_key(task_id)
        created_ms = self._redis.hget(key, "created_ms")
        if not created_ms:
            return 0.0
        return max(0.0, now_s - int(float(str(created_ms))) / 1000)
