"""Noticing a Redis that came back with less than it had, from a mark kept outside it.

Redis holds an epoch (``imagegen:redis:epoch``: an id made the first time the service ran
against it) and counts submissions (``imagegen:seq``). Every ``MARK_INTERVAL_S`` the worker that
holds the sweeper's lock copies both to S3 (``{s3_prefix}/_imagegen/redis-epoch.json``), where
no restart or failover of Redis can take them, after comparing them with the mark there:

- ``emptied``: Redis has no epoch but S3 has a mark (it restarted without its data);
- ``replaced``: Redis has another epoch than the mark's (another or an older Redis);
- ``behind``: the same epoch with fewer submissions than the mark counted (a failover to a
  replica that had not received them, or an older snapshot).

A loss is recorded in Redis (``lost_*`` fields, read by ``imagegen doctor``) and answered: an
emptied or replaced Redis starts a new epoch that names the lost one, and the mark follows
Redis again, so each loss is reported once. Writes after the last mark (at most
``MARK_INTERVAL_S`` old) can be lost unnoticed: the mark is a high-water mark, not a log.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from botocore.exceptions import ClientError

from imagegen.redis import keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from redis import Redis
    from redis.typing import EncodableT

    from imagegen.settings import Settings

__all__ = [
    "MARK_BACKOFF_S",
    "MARK_INTERVAL_S",
    "MARK_TIMEOUTS_S",
    "EpochWatch",
    "Found",
    "Mark",
    "Verdict",
    "judge",
    "mark_key",
    "read_found",
]

MARK_INTERVAL_S = 10.0
# After S3 failed a check, the next one waits this long (the sweeper must not stall on S3).
MARK_BACKOFF_S = 60.0
# The mark's requests give up quickly: connect, then read (seconds).
MARK_TIMEOUTS_S = (2.0, 5.0)
_NO_SUCH_KEY = {"NoSuchKey", "404"}

Kind = Literal["ok", "fresh", "emptied", "replaced", "behind"]


def mark_key(settings: Settings) -> str:
    """Where the mark lives: under the images prefix, which the worker may already write."""
    return f"{settings.s3_prefix.strip('/')}/_imagegen/redis-epoch.json"


@dataclass(frozen=True)
class Mark:
    """What S3 remembers of Redis: its epoch and the submissions it had counted."""

    epoch: str
    submissions: int
    written_ms: int

    def to_json(self) -> str:
        return json.dumps(
            {"epoch": self.epoch, "submissions": self.submissions, "written_ms": self.written_ms}
        )

    @classmethod
    def from_json(cls, text: str) -> Mark:
        data = json.loads(text)
        return cls(str(data["epoch"]), int(data["submissions"]), int(data["written_ms"]))


@dataclass(frozen=True)
class Found:
    """What Redis holds now: its epoch (None: none), its submissions, the last loss seen."""

    epoch: str | None
    submissions: int
    lost_kind: str = ""
    lost_from: str = ""
    lost_at_ms: int = 0
    lost_submissions: int = 0


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    found: Found
    mark: Mark | None

    @property
    def lost(self) -> bool:
        return self.kind in ("emptied", "replaced", "behind")

    @property
    def lost_submissions(self) -> int:
        """Submissions the mark counted that Redis no longer does (at least)."""
        if self.mark is None or not self.lost:
            return 0
        kept = self.found.submissions if self.kind == "behind" else 0
        return max(0, self.mark.submissions - kept)

    def describe(self) -> str:
        mark = self.mark
        if mark is None:
            return "no mark in S3 yet"
        if self.kind == "emptied":
            return (
                f"Redis came back empty: epoch {mark.epoch} and its {mark.submissions} "
                "submissions are gone"
            )
        if self.kind == "replaced":
            return f"Redis holds epoch {self.found.epoch}, not {mark.epoch} as S3 remembers"
        if self.kind == "behind":
            return (
                f"Redis counts {self.found.submissions} submissions, S3 remembers "
                f"{mark.submissions}: {self.lost_submissions} accepted ones are gone"
            )
        return f"epoch {self.found.epoch}, {self.found.submissions} submissions, as S3 remembers"


def read_found(redis: Redis) -> Found:
    """What Redis holds of its epoch now (one round trip)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.REDIS_EPOCH_KEY)
    pipe.get(keys.SUBMISSION_SEQ_KEY)
    fields, seq = pipe.execute()
    fields = cast("dict[str, str]", fields)
    return Found(
        epoch=fields.get("epoch"),
        submissions=int(seq or 0),
        lost_kind=fields.get("lost_kind", ""),
        lost_from=fields.get("lost_from", ""),
        lost_at_ms=int(fields.get("lost_at_ms", 0)),
        lost_submissions=int(fields.get("lost_submissions", 0)),
    )


def judge(found: Found, mark: Mark | None) -> Verdict:
    """Compare what Redis holds with the mark in S3."""
    if mark is None or (found.epoch is not None and mark.epoch == found.lost_from):
        # No mark yet, or one written before this epoch began (its loss already recorded).
        return Verdict("fresh" if found.epoch is None or mark is None else "ok", found, mark)
    if found.epoch is None:
        return Verdict("emptied", found, mark)
    if found.epoch != mark.epoch:
        return Verdict("replaced", found, mark)
    if found.submissions < mark.submissions:
        return Verdict("behind", found, mark)
    return Verdict("ok", found, mark)


class EpochWatch:
    """Compares Redis with the mark in S3, records a loss, and moves the mark on."""

    def __init__(self, redis: Redis, s3: S3Client, settings: Settings) -> None:
        self._redis = redis
        self._s3 = s3
        self._bucket = settings.s3_bucket
        self._key = mark_key(settings)
        self._next_check = float("-inf")
        self._backing_off_until = float("-inf")

    def due(self) -> bool:
        """Time for a check: the interval passed, or Redis has no epoch (it just came back);
        never while backing off after S3 failed."""
        now = time.monotonic()
        if now < self._backing_off_until:
            return False
        return now >= self._next_check or not self._redis.exists(keys.REDIS_EPOCH_KEY)

    def back_off(self) -> None:
        """S3 failed a check: leave it alone for ``MARK_BACKOFF_S``."""
        self._backing_off_until = time.monotonic() + MARK_BACKOFF_S

    def read(self) -> Verdict:
        """The comparison, changing nothing."""
        return judge(self._found(), self._mark())

    def check(self) -> Verdict:
        """Compare, record a loss (or the first epoch), then write the mark from Redis."""
        self._next_check = time.monotonic() + MARK_INTERVAL_S
        verdict = self.read()
        now_ms = int(time.time() * 1000)
        if verdict.found.epoch is None:  # fresh, or emptied
            self._start_epoch(verdict, now_ms)
        elif verdict.lost:  # replaced, or behind
            self._record_loss(verdict, now_ms, new_epoch=verdict.kind == "replaced")
        found = self._found()
        if found.epoch is not None:
            mark = Mark(found.epoch, found.submissions, now_ms)
            self._s3.put_object(
                Bucket=self._bucket,
                Key=self._key,
                Body=mark.to_json().encode(),
                ContentType="application/json",
            )
        return verdict

    def _start_epoch(self, verdict: Verdict, now_ms: int) -> None:
        epoch = uuid.uuid4().hex
        if not self._redis.hsetnx(keys.REDIS_EPOCH_KEY, "epoch", epoch):
            return  # another process started it first
        self._redis.hset(keys.REDIS_EPOCH_KEY, "started_ms", now_ms)
        if verdict.lost:
            self._record_loss(verdict, now_ms, new_epoch=False)

    def _record_loss(self, verdict: Verdict, now_ms: int, *, new_epoch: bool) -> None:
        fields: dict[EncodableT, EncodableT] = {
            "lost_kind": verdict.kind,
            "lost_at_ms": now_ms,
            "lost_submissions": verdict.lost_submissions,
        }
        if verdict.kind != "behind" and verdict.mark is not None:
            # The epoch this one replaced: a mark of it, written late, is no new loss.
            fields["lost_from"] = verdict.mark.epoch
        if new_epoch:
            fields |= {"epoch": uuid.uuid4().hex, "started_ms": now_ms}
        self._redis.hset(keys.REDIS_EPOCH_KEY, mapping=fields)

    def _found(self) -> Found:
        return read_found(self._redis)

    def _mark(self) -> Mark | None:
        try:
            body = self._s3.get_object(Bucket=self._bucket, Key=self._key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") in _NO_SUCH_KEY:
                return None
            raise
        return Mark.from_json(body.decode())
