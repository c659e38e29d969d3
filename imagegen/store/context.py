"""What every job script needs beyond its own arguments (``ARGV[2..6]``, read by
``job_context`` in ``scripts/lib/clock.lua``): the retention a final job gets, the webhook
hand-off grace, the delivery message template, how long spend ledgers live, and the tenants'
weights from the settings (a tenant's record wins)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imagegen.messages import delivery_message_template
from imagegen.settings import SECONDS_PER_DAY, Settings

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_LEDGER_TTL_S", "JobContext"]

# The ledgers' life with the default ``spend_retention_days``.
DEFAULT_LEDGER_TTL_S = Settings.model_fields["spend_retention_days"].default * SECONDS_PER_DAY


@dataclass(frozen=True)
class JobContext:
    retention_s: int
    webhook_grace_ms: int = 30_000
    ledger_ttl_s: int = DEFAULT_LEDGER_TTL_S
    tenant_weights: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobContext:
        return cls(
            retention_s=settings.job_retention_s,
            webhook_grace_ms=round(settings.webhook_handoff_grace_s * 1000),
            ledger_ttl_s=settings.spend_retention_days * SECONDS_PER_DAY,
            tenant_weights=dict(settings.tenant_weights),
        )

    def args(self, *, deliveries: bool = True) -> list[str | int]:
        """``ARGV[2..6]`` of a job script; without ``deliveries`` (a script that never adds a
        webhook delivery) the delivery template is left out ('')."""
        return [
            self.retention_s,
            self.webhook_grace_ms,
            _delivery_template() if deliveries else "",
            self.ledger_ttl_s,
            json.dumps(dict(self.tenant_weights), sort_keys=True),
        ]


_TEMPLATE: list[str] = []


def _delivery_template() -> str:
    """One delivery template per process (its delivery tags still differ: they hold the id)."""
    if not _TEMPLATE:
        _TEMPLATE.append(delivery_message_template())
    return _TEMPLATE[0]
