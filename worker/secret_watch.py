"""Noticing a changed webhook signing secret: a rotation is logged; a secret replaced without
the old one still signing (receivers cannot verify what follows) is logged as an error and
counted, for the ``ImagegenWebhookSecretReplaced`` alert.

What this process signed with last is remembered per tenant, by fingerprint only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from imagegen.store.signing import fingerprint
from worker import metrics

__all__ = ["SecretChangeWatch"]

log = logging.getLogger("imagegen.webhooks")


class SecretChangeWatch:
    """The primary secret this process last signed with, per tenant (None: no tenant)."""

    def __init__(self) -> None:
        self._primary: dict[str | None, str] = {}
        self._lock = threading.Lock()

    def saw(self, tenant: str | None, secrets: Sequence[str]) -> str | None:
        """Note the secrets about to sign; returns how the primary one changed since the last
        time (``rotated``: the previous one still signs; ``replaced``: it does not), or None."""
        signing = [fingerprint(secret) for secret in secrets]
        with self._lock:
            before = self._primary.get(tenant)
            self._primary[tenant] = signing[0]
        if before is None or before == signing[0]:
            return None
        how = "rotated" if before in signing else "replaced"
        metrics.WEBHOOK_SECRET_CHANGES.labels(how).inc()
        details = {
            "tenant": tenant or "-",
            "previous_fingerprint": before,
            "fingerprint": signing[0],
        }
        if how == "rotated":
            log.warning(
                "webhook signing secret rotated; the previous one still signs", extra=details
            )
        else:
            log.error(
                "webhook signing secret replaced: the previous one no longer signs, receivers "
                "holding it cannot verify new deliveries",
                extra=details,
            )
        return how
