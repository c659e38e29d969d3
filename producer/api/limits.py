"""Bounds on what one API process holds open for its callers: event streams and
``Prefer: wait`` requests, per tenant and in all. Each holds a Redis connection (its job's
channel) and a thread, so without bounds one tenant could take every one of them. The counts
live in the process: each of the API's processes (``api_workers``) bounds its own."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

__all__ = ["Held", "HeldLimits"]


class Held(StrEnum):
    STREAM = "stream"
    WAIT = "wait"


class HeldLimits:
    """Counts of what is held now, by kind and tenant (thread-safe)."""

    def __init__(self, *, per_tenant: dict[Held, int], total: dict[Held, int]) -> None:
        self._per_tenant = per_tenant
        self._total = total
        self._held: Counter[tuple[Held, str]] = Counter()
        self._held_total: Counter[Held] = Counter()
        self._lock = threading.Lock()

    def take(self, kind: Held, tenant: str) -> bool:
        """Hold one ``kind`` for ``tenant``; False (nothing held) at the tenant's or the
        process's bound."""
        with self._lock:
            if (
                self._held[(kind, tenant)] >= self._per_tenant[kind]
                or self._held_total[kind] >= self._total[kind]
            ):
                return False
            self._held[(kind, tenant)] += 1
            self._held_total[kind] += 1
            return True

    def give_back(self, kind: Held, tenant: str) -> None:
        with self._lock:
            self._held[(kind, tenant)] -= 1
            self._held_total[kind] -= 1

    @contextmanager
    def hold(self, kind: Held, tenant: str) -> Iterator[bool]:
        """Yields whether one ``kind`` is held for ``tenant`` meanwhile."""
        taken = self.take(kind, tenant)
        try:
            yield taken
        finally:
            if taken:
                self.give_back(kind, tenant)

    def held(self, kind: Held, tenant: str | None = None) -> int:
        with self._lock:
            return self._held[(kind, tenant)] if tenant else self._held_total[kind]
