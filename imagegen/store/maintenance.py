"""The maintenance store: the sweeper's work, one step each, under one fleet-wide lock.

Due webhook deliveries get a fresh message (their outbox entry moves ahead by the hand-off
grace, so a message lost with a dead worker is sent again); jobs past their deadline end
``expired`` (``JobStore.expire_due``); the dead-letter sets and the disabled endpoints are
trimmed past the job retention, like rq's registries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagegen.messages import delivery_message_template
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.store.context import DEFAULT_LEDGER_TTL_S

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Maintenance", "Trimmed"]

SWEEP_BATCH = 500


@dataclass(frozen=True)
class Trimmed:
    jobs: int
    deliveries: int
    endpoints: int
    spend_tenants: int = 0


class Maintenance:
    def __init__(
        self,
        redis: Redis,
        retention_s: int,
        handoff_grace_s: float,
        ledger_ttl_s: int = DEFAULT_LEDGER_TTL_S,
    ) -> None:
        self._retention_s = retention_s
        self._ledger_ttl_s = ledger_ttl_s
        self._grace_ms = round(handoff_grace_s * 1000)
        self._scripts = Scripts.of(redis)

    def hold_lock(self, token: str, ttl_ms: int) -> bool:
        """Take the sweeper's lock, or keep it when ``token`` holds it."""
        held = self._scripts.run("maintenance_lock", [keys.WEBHOOK_SWEEP_LOCK_KEY], [token, ttl_ms])
        return bool(held)

    def send_due_deliveries(self) -> list[str]:
        """Queue every due delivery; returns their ids."""
        due = self._scripts.run(
            "delivery_sweep_due",
            [keys.WEBHOOKS_DUE_KEY],
            [SWEEP_BATCH, self._grace_ms, delivery_message_template()],
        )
        return [str(item) for item in due]

    def trim(self) -> Trimmed:
        """Forget dead letters, disabled endpoints and spend-report tenants older than their
        retention."""
        jobs, deliveries, endpoints, tenants = self._scripts.run(
            "maintenance_trim", [], [self._retention_s, self._ledger_ttl_s]
        )
        return Trimmed(int(jobs), int(deliveries), int(endpoints), int(tenants))
