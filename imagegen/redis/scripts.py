"""The Lua scripts: one ``.lua`` file each in ``scripts/``, loaded into Redis as one library of
Redis Functions (Redis 7 or newer) and called by name.

The library is three parts: the constants (``K``, the key and queue names from
``imagegen.redis.keys`` and ``imagegen.messages``, and the lifecycle table of
``imagegen.lifecycle``: ``LIFECYCLE``, ``PLACE_STATUS``, ``TERMINAL``), the shared code
(``scripts/lib/*.lua``, in ``LIBRARY`` order: the clock, records, ledgers, deliveries, tenant
queues, token buckets, the lifecycle's places, effects and ``transition``, estimates), then each
script as one function whose body is the file. Loaded once, the library's tables and functions
live in Redis: a call pays only for what it does (as EVAL scripts, every call rebuilt them,
about 50 us each). Each file's header names its KEYS and ARGV and the key families it touches.

The library and its functions are named after a hash of their text (``imagegen_{hash}``,
``{script}_{hash}``), so processes of two versions never call each other's code. A client loads
its version on first use, and again when Redis lost it (a restart without persistence).

Arguments to ``redis.call`` are strings wherever that costs nothing (``'1'``, not ``1``; the
clock's ``NOW_DIGITS``; ``set_fields`` writes a whole number's digits): Redis 7.0 formats every
number a script passes with printf's ``%.17g``, about half a microsecond each, tens per job.

Every script takes the time as ``ARGV[1]``: ``''`` runs it on the Redis server's clock (what
production does); a test may pass its own (``Scripts.clock``), so a whole run sees one clock.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Callable, Sequence
from functools import cache, partial
from pathlib import Path
from typing import Any, ClassVar

from redis.exceptions import ResponseError

from imagegen.errors import ImagegenError, ReplicaAckTimeoutError
from imagegen.lifecycle import lua_constants
from imagegen.messages import (
    DELIVERY_ID_PLACEHOLDER,
    JOB_ID_PLACEHOLDER,
    NONCE_PLACEHOLDER,
    WEBHOOK_QUEUE,
)
from imagegen.records import REPLAYED
from imagegen.redis import keys
from imagegen.redis.replica_ack import AckedPipeline, ReplicaAck

__all__ = ["LIBRARY", "SCRIPT_NAMES", "Scripts", "function_name", "library_source"]

SCRIPTS_DIR = Path(__file__).with_name("scripts")
LIBRARY_DIR = SCRIPTS_DIR / "lib"
# The shared code, in the order each part needs the ones before it.
LIBRARY = (
    "clock",
    "records",
    "ledger",
    "deliveries",
    "queues",
    "bucket",
    "lifecycle",
    "estimate",
)
SCRIPT_NAMES: tuple[str, ...] = tuple(sorted(path.stem for path in SCRIPTS_DIR.glob("*.lua")))
# Scripts that write nothing: callable on a replica.
READ_ONLY = frozenset({"dispatch_position", "dispatch_estimate", "quota_peek", "spend_snapshot"})
_VERSION = "@@VERSION@@"

_CONSTANTS = {
    "EVENTS": keys.EVENTS_CHANNEL,
    "JOB_PREFIX": keys.JOB_KEY_PREFIX,
    "TENANT_PREFIX": keys.TENANT_KEY_PREFIX,
    "TENANT_EVENTS": keys.TENANT_EVENTS_SUFFIX,
    "OPEN": keys.OPEN_KEY,
    "DISPATCH_PREFIX": keys.DISPATCH_PREFIX,
    "DISPATCH_MODELS": keys.DISPATCH_MODELS_KEY,
    "NO_TENANT": keys.NO_TENANT,
    "SPEND_PREFIX": keys.SPEND_PREFIX,
    "SPEND_TENANTS": keys.SPEND_TENANTS_KEY,
    "CACHE_PREFIX": keys.CACHE_PREFIX,
    "SHARED_CACHE": keys.SHARED_CACHE_SCOPE,
    "DEADLINES": keys.DEADLINES_KEY,
    "RUNNING": keys.RUNNING_KEY,
    "DLQ": keys.DLQ_KEY,
    "BATCH_PREFIX": keys.BATCH_KEY_PREFIX,
    "SEQ": keys.SUBMISSION_SEQ_KEY,
    "STATS": keys.STATS_KEY,
    "WEBHOOK_PREFIX": keys.WEBHOOK_KEY_PREFIX,
    "WEBHOOKS_DUE": keys.WEBHOOKS_DUE_KEY,
    "WEBHOOKS_DLQ": keys.WEBHOOKS_DLQ_KEY,
    "WEBHOOKS_DISABLED": keys.WEBHOOKS_DISABLED_KEY,
    "WEBHOOK_SECRETS": keys.WEBHOOK_SECRETS_KEY,
    "WEBHOOK_QUEUE": WEBHOOK_QUEUE,
    "DELIVERY_ID": DELIVERY_ID_PLACEHOLDER,
    "JOB_ID": JOB_ID_PLACEHOLDER,
    "NONCE": NONCE_PLACEHOLDER,
    "REPLAYED": REPLAYED,
}


def _lua_string(value: str) -> str:
    if "'" in value or "\\" in value or "\n" in value:
        msg = f"{value!r} cannot be a Lua constant"
        raise ValueError(msg)
    return f"'{value}'"


def _function(name: str) -> str:
    body = (SCRIPTS_DIR / f"{name}.lua").read_text()
    flags = ", flags = {'no-writes'}" if name in READ_ONLY else ""
    return (
        f"-- {name}.lua\n"
        f"redis.register_function{{function_name = '{name}_{_VERSION}'{flags},\n"
        f"  callback = function(KEYS, ARGV)\nbegin(ARGV)\n{body}\nend}}\n"
    )


@cache
def _library_and_version() -> tuple[str, str]:
    constants = "\n".join(f"  {name} = {_lua_string(v)}," for name, v in _CONSTANTS.items())
    shared = "\n".join((LIBRARY_DIR / f"{part}.lua").read_text() for part in LIBRARY)
    text = (
        f"#!lua name=imagegen_{_VERSION}\n"
        f"local K = {{\n{constants}\n}}\n{lua_constants()}{shared}\n"
        + "".join(_function(name) for name in SCRIPT_NAMES)
    )
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return text.replace(_VERSION, version), version


def library_source() -> str:
    """The library as Redis loads it."""
    return _library_and_version()[0]


def function_name(name: str) -> str:
    """The Redis function of the script ``name`` in this version of the library."""
    if name not in SCRIPT_NAMES:
        msg = f"no Lua script {name!r} (known: {', '.join(SCRIPT_NAMES)})"
        raise KeyError(msg)
    return f"{name}_{_library_and_version()[1]}"


def server_clock() -> str:
    """The time every script runs on in production: the Redis server's (``''``)."""
    return ""


def _not_loaded(error: ResponseError) -> bool:
    return "function not found" in str(error).lower()


class Scripts:
    """The library on one Redis client: loaded on first use, and again when Redis lost it.

    ``Scripts.of(client)`` returns the one instance per client, so every store built on the
    same client shares it (and its clock).
    """

    _by_client: ClassVar[weakref.WeakKeyDictionary[Any, Scripts]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client
        self._loaded = False
        # What each script gets as ARGV[1]: '' (the server's clock) unless a test sets a clock.
        self.clock: Callable[[], str | float] = server_clock

    @classmethod
    def of(cls, client: Any) -> Scripts:
        with cls._lock:
            found = cls._by_client.get(client)
            if found is None:
                found = cls._by_client[client] = cls(client)
            return found

    def load(self) -> None:
        """Load this version's library into Redis (a no-op when it is there)."""
        source, version = _library_and_version()
        try:
            listed = self._client.function_list(library=f"imagegen_{version}")
            if not listed:
                self._client.function_load(source, replace=True)
        except ResponseError as e:
            if "unknown command" in str(e).lower():
                msg = "Redis 7.0 or newer is needed: the service runs as Redis Functions"
                raise ImagegenError(msg) from e
            raise
        self._loaded = True

    def run(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        client: Any = None,
        now_ms: float | None = None,
        durable: bool = False,
    ) -> Any:
        """Run the script ``name`` with the clock (or ``now_ms``) as ``ARGV[1]``; on ``client``
        when given (a pipeline: its ``execute`` returns the answer). ``durable``: a write the
        service answers for, which waits for a replica (``imagegen.redis.replica_ack``)."""
        if durable and client is None and ReplicaAck.of(self._client).replicas_needed(self._client):
            build = partial(self.run, name, keys, args, now_ms=now_ms)
            return self.execute(lambda pipe: build(client=pipe), transaction=False, durable=True)[0]
        if not self._loaded:
            self.load()
        now = self.clock() if now_ms is None else now_ms
        call = [function_name(name), len(keys), *keys, now, *args]
        if client is not None:
            return client.fcall(*call)
        try:
            return self._client.fcall(*call)
        except ResponseError as e:
            if not _not_loaded(e):
                raise
        self.load()  # Redis restarted without our library
        return self._client.fcall(*call)

    def execute(
        self,
        build: Callable[[Any], None],
        *,
        transaction: bool = True,
        durable: bool = False,
        raise_errors: bool = True,
    ) -> list[Any]:
        """Run a pipeline ``build`` fills (scripts through ``run(..., client=pipe)``), loading the
        library again and running it once more when Redis had lost it: every call of the
        pipeline then failed, none did anything. ``durable``: then wait, on the same
        connection, for a replica to have it (``imagegen.redis.replica_ack``); when none
        confirms in time, ``ReplicaAckTimeoutError`` carries the replies. Without
        ``raise_errors`` a command's error is its reply (the first one is raised otherwise)."""
        policy = ReplicaAck.of(self._client)
        replicas = policy.replicas_needed(self._client) if durable else 0
        for attempt in range(2):
            if not self._loaded:
                self.load()
            pipe = (
                AckedPipeline(
                    self._client,
                    transaction=transaction,
                    replicas=replicas,
                    timeout_ms=policy.timeout_ms,
                )
                if replicas
                else self._client.pipeline(transaction=transaction)
            )
            build(pipe)
            replies = pipe.execute(raise_on_error=False)
            lost = [r for r in replies if isinstance(r, ResponseError) and _not_loaded(r)]
            if lost and attempt == 0:
                self._loaded = False
                continue
            for reply in replies:
                if raise_errors and isinstance(reply, Exception):
                    raise reply
            if replicas and (pipe.acked or 0) < replicas:
                raise ReplicaAckTimeoutError(policy.timeout_s, replies)
            return list(replies)
        raise AssertionError  # pragma: no cover - the loop returns or raises
