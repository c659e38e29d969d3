"""A job's lifecycle: the one declared table every Lua script follows.

A job has a **status** (what callers read: ``queued``, ``running``, then one final status) and a
**place** (where it is held and what may happen to it next). The place decides the status, so
the two are written together, by one Lua function (``transition``, in
``imagegen/redis/scripts/lib/lifecycle.lua``) that

1. checks the event may move the job from where it is (``TRANSITIONS``), else changes nothing;
2. takes the job out of its old place and puts it in the new one (each place owns the Redis
   sets that hold its jobs: ``PLACES[...].holds``);
3. applies the new place's TTL policy: an open job never expires, a final one lives
   ``job_retention_s``;
4. runs the event's named effects (``EFFECTS``), in order.

The table is generated into every script's constants (``imagegen.redis.scripts``), shown in
docs/lifecycle.md (a test keeps the two equal) and checked after every step of a random run
of every event (``tests/unit/test_lifecycle_model.py``).

``paused`` is a place of a tenant's queue, not of one job: a tenant that cannot be served (its
hard budget, its concurrency or rate cap) leaves the dispatcher's scan in one write, whatever its
backlog, and comes back when it can be served again (``QUEUE_TRANSITIONS``). Its jobs stay in
their waiting sets (place ``waiting``) and are reported ``paused`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from imagegen.records import TERMINAL_STATUSES, JobStatus

__all__ = [
    "EFFECTS",
    "OPEN_PLACES",
    "PLACES",
    "QUEUE_TRANSITIONS",
    "TRANSITIONS",
    "Event",
    "Place",
    "PlaceSpec",
    "QueueState",
    "QueueTransition",
    "Transition",
    "lifecycle_markdown",
    "lua_constants",
    "transitions_from",
]


class Place(StrEnum):
    """Where a job is held. ``NEW`` is a job being created, before its first place."""

    NEW = "new"
    WAITING = "waiting"
    DELAYED = "delayed"
    AFTER = "after"
    FOLLOWING = "following"
    RELEASED = "released"
    RUNNING = "running"
    FINAL = "final"


class Event(StrEnum):
    SUBMIT = "submit"
    HOLD = "hold"
    FOLLOW = "follow"
    HIT = "hit"
    REFUSE = "refuse"
    RECOVER = "recover"
    SKIP = "skip"
    INPUT_READY = "input_ready"
    DUE = "due"
    RELEASE = "release"
    SERVE = "serve"
    COPY = "copy"
    UNFOLLOW = "unfollow"
    CLAIM = "claim"
    REQUEST_CANCEL = "request_cancel"
    RETRY = "retry"
    REDRIVE = "redrive"
    FINISH = "finish"
    CANCEL = "cancel"
    EXPIRE = "expire"
    BUDGET_EXCEEDED = "budget_exceeded"
    REPLAY = "replay"


@dataclass(frozen=True)
class PlaceSpec:
    """One place: the status a job there has (None: its final status), where Redis holds it,
    its TTL policy, and what entering it does beyond holding it."""

    place: Place
    status: JobStatus | None
    holds: str
    ttl: str
    on_enter: str = ""


PLACES: dict[Place, PlaceSpec] = {
    spec.place: spec
    for spec in (
        PlaceSpec(
            Place.WAITING,
            JobStatus.QUEUED,
            "its tenant's waiting set of its model and class (`{model}:wait:{tenant}:{class}`),"
            " by deadline then submission; its tenant's queue is ready or paused",
            "none while open",
        ),
        PlaceSpec(
            Place.DELAYED,
            JobStatus.QUEUED,
            "the model's delayed set (`{model}:delayed`), by the retry's due time",
            "none while open",
        ),
        PlaceSpec(
            Place.AFTER,
            JobStatus.QUEUED,
            "the list of the job whose output it takes (`job:{id}:next`)",
            "none while open",
        ),
        PlaceSpec(
            Place.FOLLOWING,
            JobStatus.QUEUED,
            "the followers of an identical job released or running (`cache:...:followers`)",
            "none while open",
        ),
        PlaceSpec(
            Place.RELEASED,
            JobStatus.QUEUED,
            "the model's released set and the model's and tenant's active sets (the caps)",
            "none while open",
            "its Celery message is on its queue",
        ),
        PlaceSpec(
            Place.RUNNING,
            JobStatus.RUNNING,
            "the running set by lease end, and the active sets",
            "none while open",
            "a lease; `job.started` on its first start",
        ),
        PlaceSpec(
            Place.FINAL,
            None,
            "nothing but the dead-letter set when `failed`",
            "job_retention_s",
            "out of the open sets and deadlines, reservation given back, `job.{status}` "
            "webhook, cache and chain settled",
        ),
    )
}

OPEN_PLACES = frozenset(PLACES) - {Place.FINAL}


@dataclass(frozen=True)
class Transition:
    """An event that moves a job from one of ``sources`` to ``target`` and runs ``effects``.
    A move to ``FINAL`` names the final statuses it may write."""

    event: Event
    sources: frozenset[Place]
    target: Place
    effects: tuple[str, ...] = ()
    statuses: frozenset[JobStatus] = frozenset()
    when: str = ""


_QUEUED_PLACES = frozenset(
    {Place.WAITING, Place.DELAYED, Place.AFTER, Place.FOLLOWING, Place.RELEASED}
)


def _t(
    event: Event,
    sources: set[Place] | frozenset[Place],
    target: Place,
    effects: tuple[str, ...] = (),
    *,
    statuses: set[JobStatus] | None = None,
    when: str = "",
) -> Transition:
    return Transition(event, frozenset(sources), target, effects, frozenset(statuses or ()), when)


S = JobStatus
TRANSITIONS: tuple[Transition, ...] = (
    _t(Event.SUBMIT, {Place.NEW}, Place.WAITING, ("open",), when="a new job"),
    _t(Event.HOLD, {Place.NEW}, Place.AFTER, ("open",), when="its input job is not final yet"),
    _t(
        Event.FOLLOW,
        {Place.NEW, Place.WAITING},
        Place.FOLLOWING,
        ("open_if_new",),
        when="an identical fixed-seed job is released or running",
    ),
    _t(
        Event.HIT,
        {Place.NEW},
        Place.FINAL,
        ("open", "take_cached", "book_hit"),
        statuses={S.SUCCEEDED},
        when="its image is in the cache",
    ),
    _t(
        Event.REFUSE,
        {Place.NEW},
        Place.FINAL,
        (),
        statuses={S.FAILED},
        when="a raw message broke rules",
    ),
    _t(
        Event.RECOVER,
        {Place.NEW},
        Place.FINAL,
        (),
        statuses={S.SUCCEEDED},
        when="an operator re-creates a record Redis lost, from its image in S3",
    ),
    _t(
        Event.SKIP,
        {Place.NEW, Place.AFTER},
        Place.FINAL,
        ("open_if_new", "note_skipped"),
        statuses={S.CANCELED},
        when="its input job ended without an image",
    ),
    _t(Event.INPUT_READY, {Place.AFTER}, Place.WAITING, when="its input job succeeded"),
    _t(Event.DUE, {Place.DELAYED}, Place.WAITING, when="its retry is due"),
    _t(
        Event.RELEASE,
        {Place.WAITING},
        Place.RELEASED,
        ("reserve", "push"),
        when="its tenant's turn (fair share), a token, room in the caps and the budget",
    ),
    _t(
        Event.SERVE,
        {Place.WAITING, Place.FOLLOWING},
        Place.FINAL,
        ("take_cached", "book_hit"),
        statuses={S.SUCCEEDED},
        when="an identical job's image is in the cache",
    ),
    _t(
        Event.COPY,
        {Place.NEW, Place.FOLLOWING},
        Place.WAITING,
        ("open_if_new", "prepare_copy"),
        when="its image is in the cache and objects are copied: it waits its turn to copy",
    ),
    _t(
        Event.UNFOLLOW,
        {Place.FOLLOWING},
        Place.WAITING,
        when="the job it followed went back to wait or ended without an image",
    ),
    _t(Event.CLAIM, {Place.RELEASED}, Place.RUNNING, ("lease",), when="a worker takes it"),
    _t(Event.REQUEST_CANCEL, {Place.RUNNING}, Place.RUNNING, ("flag_cancel",)),
    _t(
        Event.RETRY,
        {Place.RUNNING},
        Place.DELAYED,
        ("book_bought", "log_attempt", "free_followers"),
        when="a retryable failure, by the lease holder",
    ),
    _t(
        Event.REDRIVE,
        {Place.RUNNING, Place.RELEASED},
        Place.WAITING,
        ("book_lost_call", "free_followers"),
        when="its lease ran out, or no worker claimed it within the grace",
    ),
    _t(
        Event.FINISH,
        {Place.RUNNING},
        Place.FINAL,
        ("book_bought",),
        statuses={S.SUCCEEDED, S.FAILED, S.FILTERED, S.CANCELED},
        when="the lease holder's attempt ended",
    ),
    _t(
        Event.CANCEL, _QUEUED_PLACES, Place.FINAL, (), statuses={S.CANCELED}, when="nobody holds it"
    ),
    _t(
        Event.EXPIRE,
        _QUEUED_PLACES,
        Place.FINAL,
        (),
        statuses={S.EXPIRED},
        when="its deadline passed before it ever started",
    ),
    _t(
        Event.BUDGET_EXCEEDED,
        {Place.WAITING},
        Place.FINAL,
        (),
        statuses={S.BUDGET_EXCEEDED},
        when="its tenant's hard budget has no room and says fail",
    ),
    _t(
        Event.REPLAY,
        {Place.FINAL},
        Place.WAITING,
        ("reset", "open"),
        when="an operator replays a failed job",
    ),
)
del S

EFFECTS: dict[str, str] = {
    "open": "count it in the open sets (the caps), the job indexes, its batch and deadlines",
    "open_if_new": "`open`, when the job is new",
    "take_cached": "copy the cached image's fields (S3 key, seed, size, sha256) into the record",
    "book_hit": "count the hit and the money it saved in the tenant's ledgers",
    "note_skipped": "say which input job ended without an image",
    "reserve": "hold the model's price in the tenant's day and month ledgers (a retry keeps "
    "its reservation; a job whose image was already bought needs none)",
    "push": "put its Celery message on its queue (interactive or batch)",
    "prepare_copy": "note the cached object to copy instead of calling Bedrock",
    "lease": "the worker's lease; on a first start `started_ms` and the `job.started` webhook",
    "flag_cancel": "set the cancel flag the worker checks before its call and at its finish",
    "log_attempt": "add the attempt to the log, with its error and the retry's due time",
    "free_followers": "identical jobs following it go back to wait for their own turn",
    "book_lost_call": "a Bedrock call in flight when the lease ran out is booked as spent",
    "book_bought": "the image the attempt bought (if it did) becomes spend: its reservation, or "
    "its price",
    "reset": "a new run: attempts, errors, deadline, cancel flag, pool to avoid and object to "
    "copy cleared; its price reserved again; a Replayed entry in the attempt log; replays counted",
}


class QueueState(StrEnum):
    """A tenant's queue of one model: its waiting jobs, as the dispatcher's scan sees them."""

    IDLE = "idle"
    READY = "ready"
    PAUSED = "paused"


@dataclass(frozen=True)
class QueueTransition:
    event: str
    sources: frozenset[QueueState]
    target: QueueState
    when: str


QUEUE_TRANSITIONS: tuple[QueueTransition, ...] = (
    QueueTransition(
        "arrive",
        frozenset({QueueState.IDLE}),
        QueueState.READY,
        "a job starts waiting; its start tag is the later of the virtual time and its last "
        "finish tag (no credit for idle time)",
    ),
    QueueTransition(
        "empty",
        frozenset({QueueState.READY, QueueState.PAUSED}),
        QueueState.IDLE,
        "its last waiting job leaves; its finish tag is kept until the virtual time passes it",
    ),
    QueueTransition(
        "pause",
        frozenset({QueueState.READY}),
        QueueState.PAUSED,
        "its turn came and it cannot be served: its hard budget has no room (until the next "
        "UTC day or month), its concurrency cap is full (until a slot frees) or its rate cap "
        "has no token (until the next one is due)",
    ),
    QueueTransition(
        "resume",
        frozenset({QueueState.PAUSED}),
        QueueState.READY,
        "the time it waited for came, a slot or a reservation of the tenant was given back, "
        "or its budget or caps changed",
    ),
)


def transitions_from(place: Place) -> list[Transition]:
    return [t for t in TRANSITIONS if place in t.sources]


def _lua_set(values: frozenset[str] | frozenset[Place] | frozenset[JobStatus]) -> str:
    return "{" + ", ".join(f"['{v}'] = true" for v in sorted(values)) + "}"


def lua_constants() -> str:
    """The table as Lua: ``LIFECYCLE[event] = {from = {...}, to = ..., effects = {...},
    statuses = {...}}``, ``PLACE_STATUS[place]`` and ``TERMINAL[status]``."""
    rules = []
    for t in TRANSITIONS:
        effects = ", ".join(f"'{e}'" for e in t.effects)
        rules.append(
            f"  {t.event.value} = {{from = {_lua_set(t.sources)}, to = '{t.target.value}', "
            f"effects = {{{effects}}}, statuses = {_lua_set(t.statuses)}}},"
        )
    statuses = ", ".join(
        f"{spec.place.value} = '{spec.status.value}'"
        for spec in PLACES.values()
        if spec.status is not None
    )
    terminal = _lua_set(frozenset(TERMINAL_STATUSES))
    return (
        "local LIFECYCLE = {\n" + "\n".join(rules) + "\n}\n"
        f"local PLACE_STATUS = {{{statuses}}}\n"
        f"local TERMINAL = {terminal}\n"
    )


def _places_cell(places: frozenset[Place]) -> str:
    order = list(Place)
    return ", ".join(p.value for p in sorted(places, key=order.index))


def lifecycle_markdown() -> str:
    """The tables docs/lifecycle.md shows."""
    lines = [
        "| place | status | held in | TTL | on entry |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in PLACES.values():
        status = spec.status.value if spec.status else "the final status"
        lines.append(
            f"| {spec.place.value} | {status} | {spec.holds} | {spec.ttl} | "
            f"{spec.on_enter or '-'} |"
        )
    lines += [
        "",
        "| event | from | to | effects | when |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in TRANSITIONS:
        target = t.target.value
        if t.statuses:
            target += " (" + ", ".join(sorted(s.value for s in t.statuses)) + ")"
        effects = ", ".join(t.effects) or "-"
        lines.append(
            f"| {t.event.value} | {_places_cell(t.sources)} | {target} | {effects} | "
            f"{t.when or '-'} |"
        )
    lines += ["", "| tenant queue event | from | to | when |", "| --- | --- | --- | --- |"]
    for q in QUEUE_TRANSITIONS:
        sources = ", ".join(sorted(s.value for s in q.sources))
        lines.append(f"| {q.event} | {sources} | {q.target.value} | {q.when} |")
    lines += ["", "| effect | what it does |", "| --- | --- |"]
    lines += [f"| {name} | {what} |" for name, what in EFFECTS.items()]
    return "\n".join(lines) + "\n"
