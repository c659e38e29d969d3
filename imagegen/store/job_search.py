"""Finding a tenant's jobs: by words of the prompt, status, model, batch and creation date,
newest first, a page at a time, through the indexes of ``job_index`` (never a scan, never a
record read that is not on the page).

A query names the sorted sets a job must be in (each word's, the model's, the status's; a
queued or running job is looked for in the tenant's open set). The smallest one leads: it is
walked newest first from the cursor, a window at a time, and each window is checked against the
others with one ``ZMSCORE`` each. A batch leads with its own list. One page looks at most
``MAX_EXAMINED`` jobs: a page cut short there says so, and its cursor goes on from where it
stopped. The records on the page are read and checked once more against the whole query (an
index entry may be stale: a replayed job, an expired record).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from imagegen.records import JobRecord, JobStatus
from imagegen.redis import keys
from imagegen.store import prompt_words
from imagegen.store.job_index import JobIndex
from imagegen.store.job_reads import JobReads

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["MAX_EXAMINED", "FoundPage", "JobQuery", "JobSearch"]

MAX_EXAMINED = 5_000
_MIN_WINDOW, _MAX_WINDOW = 200, 1_000
_CURSOR_SEPARATOR = "."


@dataclass(frozen=True)
class JobQuery:
    """What a tenant looks for; every field given must hold (the words: all of them)."""

    words: tuple[str, ...] = ()
    status: JobStatus | None = None
    model_id: str | None = None
    batch_id: str | None = None
    # Created at or after ``from_ms``, and before ``to_ms`` (unix ms).
    from_ms: int | None = None
    to_ms: int | None = None

    @classmethod
    def of(cls, text: str = "", **fields: Any) -> JobQuery:
        """A query whose words are those of ``text`` (as the index files them)."""
        return cls(words=tuple(prompt_words.words(text)), **fields)

    def matches(self, record: JobRecord) -> bool:
        """Whether the record itself answers the query (what the indexes stand for)."""
        created_ms = round(record.created_at.timestamp() * 1000)
        prompt = record.request.prompt_text if record.request is not None else ""
        return (
            (self.status is None or record.status is self.status)
            and (self.model_id is None or record.model_id == self.model_id)
            and (self.batch_id is None or record.batch_id == self.batch_id)
            and (self.from_ms is None or created_ms >= self.from_ms)
            and (self.to_ms is None or created_ms < self.to_ms)
            and set(self.words) <= set(prompt_words.words(prompt))
        )


@dataclass(frozen=True)
class FoundPage:
    """One page of a search, newest first; ``next_cursor`` is None when nothing follows.
    ``cut_short``: the page stopped at ``MAX_EXAMINED`` jobs looked at, not at its size."""

    jobs: list[JobRecord]
    next_cursor: str | None
    examined: int
    cut_short: bool = False


@dataclass
class _Window:
    """Candidates (created ms, job id), newest first, and whether more follow them."""

    items: list[tuple[int, str]]
    more: bool


class JobSearch:
    """Searches on a Redis client with ``decode_responses=True``."""

    def __init__(self, redis: Redis, reads: JobReads, index: JobIndex) -> None:
        self._redis = redis
        self._reads = reads
        self._index = index

    def find(
        self, tenant: str, query: JobQuery, *, cursor: str | None = None, limit: int = 50
    ) -> FoundPage:
        final_status = query.status is not None and query.status.is_terminal
        if final_status:
            self._index.settle(tenant)
        sets = self._sets(tenant, query)
        if query.batch_id is not None:
            windows = self._batch_windows(tenant, query, cursor, _window_size(limit))
            filters = sets
        else:
            driver, filters = self._leader(sets or [keys.tenant_jobs_key(tenant)])
            windows = self._zset_windows(driver, query, cursor, _window_size(limit))
        open_status = query.status if query.status is not None and not final_status else None
        chosen, examined, stop = self._walk(windows, filters, open_status, limit)
        records = self._checked(tenant, query, chosen)
        next_cursor = f"{stop[0]}{_CURSOR_SEPARATOR}{stop[1]}" if stop else None
        cut_short = stop is not None and len(chosen) < limit
        return FoundPage(records, next_cursor, examined, cut_short)

    def _sets(self, tenant: str, query: JobQuery) -> list[str]:
        sets = [keys.tenant_word_jobs_key(tenant, word) for word in query.words]
        if query.model_id is not None:
            sets.append(keys.tenant_model_jobs_key(tenant, query.model_id))
        if query.status is not None:
            sets.append(
                keys.tenant_status_jobs_key(tenant, query.status.value)
                if query.status.is_terminal
                else keys.tenant_open_key(tenant)
            )
        return sets

    def _leader(self, sets: list[str]) -> tuple[str, list[str]]:
        """The smallest set, and the others."""
        if len(sets) == 1:
            return sets[0], []
        pipe = self._redis.pipeline(transaction=False)
        for key in sets:
            pipe.zcard(key)
        sizes = pipe.execute()
        smallest = min(range(len(sets)), key=lambda i: int(sizes[i]))
        return sets[smallest], sets[:smallest] + sets[smallest + 1 :]

    def _walk(
        self,
        windows: Iterator[_Window],
        filters: list[str],
        open_status: JobStatus | None,
        limit: int,
    ) -> tuple[list[str], int, tuple[int, str] | None]:
        """The matching job ids, how many were looked at, and where a next page starts (None:
        nothing follows)."""
        chosen: list[str] = []
        examined = 0
        seen: set[str] = set()
        for window in windows:
            items = [item for item in window.items if item[1] not in seen]
            seen.update(job_id for _, job_id in items)
            kept = self._kept(items, filters, open_status)
            for position, (item, keep) in enumerate(zip(items, kept, strict=True)):
                examined += 1
                if keep:
                    chosen.append(item[1])
                last = position == len(items) - 1
                if len(chosen) == limit or examined >= MAX_EXAMINED:
                    return chosen, examined, (item if not last or window.more else None)
        return chosen, examined, None

    def _kept(
        self, items: list[tuple[int, str]], filters: list[str], open_status: JobStatus | None
    ) -> list[bool]:
        """Which candidates are in every other set (and, for an open status, have it)."""
        if not items or (not filters and open_status is None):
            return [True] * len(items)
        ids = [job_id for _, job_id in items]
        pipe = self._redis.pipeline(transaction=False)
        for key in filters:
            pipe.zmscore(key, ids)
        if open_status is not None:
            for job_id in ids:
                pipe.hget(keys.job_key(job_id), "status")
        answers = pipe.execute()
        memberships = answers[: len(filters)]
        statuses = answers[len(filters) :] if open_status is not None else None
        return [
            all(scores[i] is not None for scores in memberships)
            and (statuses is None or statuses[i] == cast("JobStatus", open_status).value)
            for i in range(len(ids))
        ]

    def _zset_windows(
        self, driver: str, query: JobQuery, cursor: str | None, size: int
    ) -> Iterator[_Window]:
        start = self._start_rank(driver, query, cursor)
        while True:
            found = cast(
                "list[tuple[str, float]]",
                self._redis.zrevrange(driver, start, start + size - 1, withscores=True),
            )
            items = [(int(score), str(job_id)) for job_id, score in found]
            more = len(items) == size
            if query.from_ms is not None and items and items[-1][0] < query.from_ms:
                items = [item for item in items if item[0] >= query.from_ms]
                more = False
            yield _Window(items, more)
            if not more:
                return
            start += size

    def _start_rank(self, driver: str, query: JobQuery, cursor: str | None) -> int:
        """Where the walk starts: after the cursor's job, and below ``to_ms``."""
        after_ms, after_id = _parse_cursor(cursor)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrevrank(driver, after_id or "")
        pipe.zcount(driver, f"({after_ms}" if after_ms is not None else "+inf", "+inf")
        pipe.zcount(driver, query.to_ms if query.to_ms is not None else "+inf", "+inf")
        rank, above_cursor, above_to = pipe.execute()
        if query.to_ms is None:
            above_to = 0
        if after_id is None:
            return int(above_to)
        # The cursor's job left the set: go on below its time.
        after = int(rank) + 1 if rank is not None else int(above_cursor)
        return max(after, int(above_to))

    def _batch_windows(
        self, tenant: str, query: JobQuery, cursor: str | None, size: int
    ) -> Iterator[_Window]:
        """A batch's jobs in submission order (they share one creation time)."""
        batch = self._reads.batch(cast("str", query.batch_id))
        if batch is None or batch.tenant != tenant:
            return
        created = batch.created_ms
        if (query.from_ms is not None and created < query.from_ms) or (
            query.to_ms is not None and created >= query.to_ms
        ):
            return
        _, after_id = _parse_cursor(cursor)
        ids = batch.job_ids
        start = ids.index(after_id) + 1 if after_id in ids else 0
        for at in range(start, len(ids), size):
            chunk = ids[at : at + size]
            yield _Window([(created, job_id) for job_id in chunk], at + size < len(ids))

    def _checked(self, tenant: str, query: JobQuery, job_ids: Sequence[str]) -> list[JobRecord]:
        """The records, each checked against the query; a job filed under a final status its
        record no longer has goes back to be filed again."""
        records = self._reads.get_many(job_ids)
        found, misfiled = [], []
        for job_id, record in zip(job_ids, records, strict=True):
            if record is None or record.tenant != tenant:
                continue
            if query.matches(record):
                found.append(record)
            elif query.status is not None and record.status is not query.status:
                misfiled.append(job_id)
        if misfiled and query.status is not None and query.status.is_terminal:
            self._index.refile(tenant, query.status.value, misfiled)
        return found


def _window_size(limit: int) -> int:
    return max(_MIN_WINDOW, min(_MAX_WINDOW, 4 * limit))


def _parse_cursor(cursor: str | None) -> tuple[int | None, str | None]:
    """A cursor is ``{created ms}.{job id}``."""
    if not cursor:
        return None, None
    head, separator, tail = cursor.partition(_CURSOR_SEPARATOR)
    if separator and head.lstrip("-").isdigit() and tail:
        return int(head), tail
    return None, None
