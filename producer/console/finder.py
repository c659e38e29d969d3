"""Finding jobs in the console: the search form's fields (words of the prompt, status, model,
batch, dates; the table or the gallery), a page of what they find, and the rows or tiles of
single jobs that the live pages ask for when an event names them.

Everything is read through ``imagegen.store.job_search`` with the session's tenant: another
tenant's job is never found, and a row asked for by its id is answered only for its owner.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from imagegen.records import JobRecord, JobStatus
from imagegen.store.job_search import FoundPage, JobQuery, JobSearch
from producer.api.state import ApiState, State
from producer.console.auth import TenantLogin
from producer.console.render import page

__all__ = ["Listing", "find", "listing_of", "router"]

router = APIRouter(include_in_schema=False)

View = Literal["table", "gallery"]
PAGE_SIZE = {"table": 50, "gallery": 48}
# How many jobs one live update may ask for by id.
MAX_IDS = 50
MAX_TEXT_CHARS = 200
# The most a browser's zone is off UTC (minutes), as getTimezoneOffset() says it.
MAX_TZ_OFFSET_MIN = 16 * 60


@dataclass(frozen=True)
class Listing:
    """What the jobs section shows: the search form's values, read from the query string."""

    text: str = ""
    status: str = ""
    model_id: str = ""
    batch_id: str = ""
    from_date: str = ""
    to_date: str = ""
    tz_offset_min: int = 0
    view: View = "table"
    cursor: str = ""
    notice: str = ""

    @property
    def query(self) -> JobQuery:
        """The search: the gallery shows succeeded jobs only (the ones with an image)."""
        status = JobStatus.SUCCEEDED if self.view == "gallery" else _status(self.status)
        return JobQuery.of(
            self.text,
            status=status,
            model_id=self.model_id or None,
            batch_id=self.batch_id or None,
            from_ms=self._day_start_ms(self.from_date),
            to_ms=self._day_start_ms(self.to_date, days_after=1),
        )

    def cleared(self) -> str:
        """The query string of the same view with no search."""
        return self.params(q="", status="", model="", batch="", since="", until="", after="")

    @property
    def filtered(self) -> bool:
        return bool(self.text or self.status or self.model_id or self.batch_id) or bool(
            self.from_date or self.to_date
        )

    def params(self, **changes: str) -> str:
        """The query string of this listing with ``changes`` (by their names in the query
        string; an empty value drops a field)."""
        fields = {
            "q": self.text,
            "status": self.status,
            "model": self.model_id,
            "batch": self.batch_id,
            "since": self.from_date,
            "until": self.to_date,
            "tz": str(self.tz_offset_min) if self.tz_offset_min else "",
            "view": self.view if self.view != "table" else "",
            "after": self.cursor,
        }
        fields.update(changes)
        return urlencode({k: v for k, v in fields.items() if v})

    def _day_start_ms(self, day: str, days_after: int = 0) -> int | None:
        """The start of the browser's local day ``day`` (+ ``days_after``), in unix ms."""
        if not day:
            return None
        start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
        start += timedelta(days=days_after, minutes=self.tz_offset_min)
        return int(start.timestamp() * 1000)


def _status(value: str) -> JobStatus | None:
    try:
        return JobStatus(value) if value else None
    except ValueError:
        return None


def _day(value: str) -> str:
    try:
        return date.fromisoformat(value).isoformat() if value else ""
    except ValueError:
        return ""


def listing_of(request: Request) -> Listing:
    """The listing a request asks for; values that make no sense are dropped, and said so."""
    given = request.query_params
    text = given.get("q", "")[:MAX_TEXT_CHARS].strip()
    status = given.get("status", "")
    from_date, to_date = _day(given.get("since", "")), _day(given.get("until", ""))
    dropped = [
        name
        for name, raw, kept in (
            ("status", status, _status(status)),
            ("since", given.get("since", ""), from_date),
            ("until", given.get("until", ""), to_date),
        )
        if raw and not kept
    ]
    try:
        offset = max(-MAX_TZ_OFFSET_MIN, min(MAX_TZ_OFFSET_MIN, int(given.get("tz", "0"))))
    except ValueError:
        offset = 0
    listing = Listing(
        text=text,
        status=status if _status(status) else "",
        model_id=given.get("model", "")[:MAX_TEXT_CHARS],
        batch_id=given.get("batch", "")[:MAX_TEXT_CHARS].strip(),
        from_date=from_date,
        to_date=to_date,
        tz_offset_min=offset,
        view="gallery" if given.get("view") == "gallery" else "table",
        cursor=given.get("after", "")[:MAX_TEXT_CHARS],
    )
    if text and not listing.query.words:
        dropped.append("q (no word to look for: one letter, or only words like 'the')")
    if dropped:
        listing = replace(listing, notice=f"Left out: {', '.join(dropped)}.")
    return listing


def search(state: ApiState) -> JobSearch:
    client = state.client
    return JobSearch(state.redis, client.reads, client.submitter.index)


def find(state: ApiState, tenant: str, listing: Listing) -> FoundPage:
    """One page of the listing, queued jobs with their place in the queue."""
    found = search(state).find(
        tenant, listing.query, cursor=listing.cursor or None, limit=PAGE_SIZE[listing.view]
    )
    jobs = [state.client.with_position(record) for record in found.jobs]
    return replace(found, jobs=jobs)


@router.get("/console/rows")
def rows(request: Request, state: State, session: TenantLogin, ids: str = "") -> HTMLResponse:
    """Rows (or tiles, in the gallery) of the listing: its first page, or with ``ids`` the
    jobs named (the tenant's own, at most ``MAX_IDS``), each saying whether it matches the
    listing (``data-match``), for a live page to put in place."""
    assert session.tenant is not None
    listing = listing_of(request)
    template = "tiles.html" if listing.view == "gallery" else "rows.html"
    if not ids:
        return page(template, jobs=find(state, session.tenant, listing).jobs, listing=listing)
    wanted = list(dict.fromkeys(i for i in ids.split(",") if i))[:MAX_IDS]
    query = listing.query
    jobs: list[JobRecord] = []
    matching: set[str] = set()
    for record in state.client.get_many(wanted):
        if record is None or record.tenant != session.tenant:
            continue
        if query.matches(record):
            matching.add(record.job_id)
        elif listing.view == "gallery":
            continue  # a tile is only for a job with an image
        jobs.append(state.client.with_position(record))
    return page(template, jobs=jobs, listing=listing, matching=matching)
