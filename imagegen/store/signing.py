"""Webhook signing secrets: where they come from, and never made behind a receiver's back.

The secrets of jobs without a tenant come from ``IMAGEGEN_WEBHOOK_SECRET`` when it is set (it
survives anything Redis loses); otherwise from Redis, where ``imagegen webhook-secret --create``
puts the first one. A tenant's live in Redis, made with its first API key, by ``--create`` or by
a rotation. Nothing makes one on a read: with none stored (a Redis that came back empty), reading
them raises ``SigningSecretMissingError`` and deliveries wait, instead of being signed with a
secret no receiver knows.

Stored as JSON, newest first: ``[{"secret", "created_ms", "retires_ms"}]``. After a rotation the
previous secret keeps signing, beside the new one, for ``overlap_s`` seconds, so receivers can
switch without losing a delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis as redis_lib

from imagegen.errors import SigningSecretMissingError, SigningSecretSettingError
from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

    from imagegen.settings import Settings

__all__ = [
    "SECRET_PREFIX",
    "SigningSecrets",
    "fingerprint",
    "new_secret",
    "new_secret_entry",
    "secret_problem",
    "signing_secrets",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 24
_FINGERPRINT_CHARS = 12


def new_secret() -> str:
    """A fresh secret: ``whsec_`` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def new_secret_entry(secret: str | None = None) -> dict[str, Any]:
    """A stored entry for ``secret`` (a fresh one when None), signing until rotated."""
    return {
        "secret": secret or new_secret(),
        "created_ms": int(time.time() * 1000),
        "retires_ms": None,
    }


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign (None when it can): ``whsec_`` + base64 of 24+ bytes."""
    if not secret.startswith(SECRET_PREFIX):
        return f"must start with {SECRET_PREFIX}"
    try:
        raw = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return f"must be {SECRET_PREFIX} followed by base64"
    if len(raw) < SECRET_BYTES:
        return f"must hold {SECRET_BYTES}+ random bytes (it holds {len(raw)})"
    return None


def fingerprint(secret: str) -> str:
    """A short, one-way name for a secret, safe to log and compare."""
    return hashlib.sha256(secret.encode()).hexdigest()[:_FINGERPRINT_CHARS]


def signing_secrets(redis: Redis, settings: Settings, tenant: str | None = None) -> SigningSecrets:
    """The secrets that sign ``tenant``'s webhooks (None: jobs without a tenant)."""
    configured: tuple[str, ...] = ()
    if tenant is None and settings.webhook_secret is not None:
        configured = tuple(settings.webhook_secret.get_secret_value().split())
    return SigningSecrets(redis, settings.webhook_secret_overlap_s, tenant, configured)


class SigningSecrets:
    """One tenant's signing secrets, newest first; without a tenant, the ones that sign only
    jobs that have no tenant (``configured``: from the settings, never stored)."""

    def __init__(
        self,
        redis: Redis,
        overlap_s: int,
        tenant: str | None = None,
        configured: Sequence[str] = (),
    ) -> None:
        self._redis = redis
        self._overlap_s = overlap_s
        self.tenant = tenant
        self._configured = tuple(configured)
        self._key = keys.webhook_secrets_key(tenant)

    @property
    def from_settings(self) -> bool:
        return bool(self._configured)

    def _load(self) -> list[dict[str, Any]]:
        raw = self._redis.get(self._key)
        return json.loads(raw) if raw else []

    def active(self, stored: str | None = None) -> list[str]:
        """The secrets to sign with now, newest first; ``stored``: what was read of them
        already (JSON, '' for none). Raises ``SigningSecretMissingError`` when there are none."""
        if self._configured:
            return list(self._configured)
        entries = json.loads(stored) if stored else ([] if stored == "" else self._load())
        now_ms = time.time() * 1000
        found = [
            e["secret"] for e in entries if e["retires_ms"] is None or e["retires_ms"] > now_ms
        ]
        if not found:
            raise SigningSecretMissingError(self.tenant)
        return found

    def exists(self) -> bool:
        try:
            self.active()
        except SigningSecretMissingError:
            return False
        return True

    def current(self) -> str:
        return self.active()[0]

    def create(self, secret: str | None = None) -> str | None:
        """Store the first secret (``secret``, or a fresh one); None when one is stored
        already (it is left as it is)."""
        if self._configured:
            raise SigningSecretSettingError
        entry = new_secret_entry(secret)
        made = self._redis.set(self._key, json.dumps([entry]), nx=True)
        return str(entry["secret"]) if made else None

    def rotate(self) -> str:
        """Make a new secret the primary one; the old ones retire after the overlap (with none
        stored, the new one is the first)."""
        if self._configured:
            raise SigningSecretSettingError
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(self._key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(self._key)
                    entries = json.loads(raw) if raw else []
                    now_ms = time.time() * 1000
                    retire_at = now_ms + self._overlap_s * 1000
                    for entry in entries:
                        if entry["retires_ms"] is None:
                            entry["retires_ms"] = retire_at
                    kept = [e for e in entries if e["retires_ms"] > now_ms]
                    fresh = new_secret_entry()
                    pipe.multi()
                    pipe.set(self._key, json.dumps([fresh, *kept]))
                    pipe.execute()
                    return str(fresh["secret"])
                except redis_lib.WatchError:
                    continue
