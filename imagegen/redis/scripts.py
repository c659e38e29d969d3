"""The Lua scripts: one ``.lua`` file each in ``scripts/``, loaded by name, registered once per
Redis client.

Every script is sent as three parts: the constants (``K``, the key names and queue names from
``imagegen.redis.keys`` and ``imagegen.messages``, and ``TERMINAL``, the final statuses), the
shared prelude (``scripts/prelude.lua``: the server clock, job transitions, the token bucket),
then the script itself. Each file's header names its KEYS and ARGV.
"""

from __future__ import annotations

import threading
import weakref
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from imagegen.messages import (
    DELIVERY_ID_PLACEHOLDER,
    JOB_ID_PLACEHOLDER,
    NONCE_PLACEHOLDER,
    WEBHOOK_QUEUE,
)
from imagegen.records import TERMINAL_STATUSES
from imagegen.redis import keys

if TYPE_CHECKING:
    from redis.commands.core import Script

__all__ = ["SCRIPT_NAMES", "Scripts", "script_source"]

SCRIPTS_DIR = Path(__file__).with_name("scripts")
PRELUDE = "prelude"
SCRIPT_NAMES: tuple[str, ...] = tuple(
    sorted(path.stem for path in SCRIPTS_DIR.glob("*.lua") if path.stem != PRELUDE)
)

_CONSTANTS = {
    "EVENTS": keys.EVENTS_CHANNEL,
    "JOB_PREFIX": keys.JOB_KEY_PREFIX,
    "TENANT_PREFIX": keys.TENANT_KEY_PREFIX,
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
    "STATS": keys.STATS_KEY,
    "WEBHOOK_PREFIX": keys.WEBHOOK_KEY_PREFIX,
    "WEBHOOKS_DUE": keys.WEBHOOKS_DUE_KEY,
    "WEBHOOKS_DLQ": keys.WEBHOOKS_DLQ_KEY,
    "WEBHOOKS_DISABLED": keys.WEBHOOKS_DISABLED_KEY,
    "WEBHOOK_QUEUE": WEBHOOK_QUEUE,
    "DELIVERY_ID": DELIVERY_ID_PLACEHOLDER,
    "JOB_ID": JOB_ID_PLACEHOLDER,
    "NONCE": NONCE_PLACEHOLDER,
}


def _lua_string(value: str) -> str:
    if "'" in value or "\\" in value or "\n" in value:
        msg = f"{value!r} cannot be a Lua constant"
        raise ValueError(msg)
    return f"'{value}'"


@cache
def _header() -> str:
    constants = "\n".join(f"  {name} = {_lua_string(v)}," for name, v in _CONSTANTS.items())
    terminal = ", ".join(f"[{_lua_string(s.value)}] = true" for s in sorted(TERMINAL_STATUSES))
    return f"local K = {{\n{constants}\n}}\nlocal TERMINAL = {{{terminal}}}\n"


@cache
def script_source(name: str) -> str:
    """The full text sent to Redis for the script ``name``."""
    if name not in SCRIPT_NAMES:
        msg = f"no Lua script {name!r} (known: {', '.join(SCRIPT_NAMES)})"
        raise KeyError(msg)
    prelude = (SCRIPTS_DIR / f"{PRELUDE}.lua").read_text()
    body = (SCRIPTS_DIR / f"{name}.lua").read_text()
    return f"{_header()}{prelude}\n{body}"


class Scripts:
    """The scripts of one Redis client, each registered on first use and then reused.

    ``Scripts.of(client)`` returns the one instance per client, so every store built on the
    same client shares the registrations (and redis-py's EVALSHA fallback).
    """

    _by_client: ClassVar[weakref.WeakKeyDictionary[Any, Scripts]] = weakref.WeakKeyDictionary()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client
        self._registered: dict[str, Script] = {}

    @classmethod
    def of(cls, client: Any) -> Scripts:
        with cls._lock:
            found = cls._by_client.get(client)
            if found is None:
                found = cls._by_client[client] = cls(client)
            return found

    def __getitem__(self, name: str) -> Script:
        found = self._registered.get(name)
        if found is None:
            found = self._registered[name] = self._client.register_script(script_source(name))
        return found
