"""``OperatorClient``: what operators do to a deployment, over Redis.

API keys, tenants' weights, caps, budgets and default webhooks, the signing secrets, spend
reports, the shared quota, dead letters and replays, the quarantine, webhook deliveries and the
image cache. ``producer.Client`` submits and reads jobs (a trusted backend's client);
``imagegen_client`` is the HTTP API's client for every other backend. The CLI's operating
commands and the API's tenant and admin routes use this one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from imagegen.errors import FieldError, InvalidRequestError
from imagegen.records import JobRecord
from imagegen.redis.connection import connect
from imagegen.settings import Settings, get_settings
from imagegen.ssrf import WebhookUrlError, vet_configured
from imagegen.store.cache import ImageCache
from imagegen.store.deliveries import Deliveries
from imagegen.store.dispatch import Dispatch, TenantLimits, TenantShare
from imagegen.store.jobs import JobStore
from imagegen.store.pool_stats import PoolDay, PoolStats
from imagegen.store.quarantine import Quarantine
from imagegen.store.quota import QuotaStatus, QuotaStore
from imagegen.store.signing import SigningSecrets, signing_secrets
from imagegen.store.spend import Budget, Ledger, PeriodSpend, SpendRow, periods
from imagegen.store.stats import Stats
from imagegen.store.tenants import TENANT_PATTERN, ApiKeys, Tenants, is_tenant_name
from producer.admin_bounds import budget_errors, limit_errors

__all__ = ["OperatorClient"]


class OperatorClient:
    """An operator's handle on the deployment.

    >>> operator = OperatorClient()
    >>> _, key = operator.api_keys.create("acme")  # shown once; stored hashed
    >>> operator.set_budget(Budget("acme", daily_hard=25.0))
    >>> operator.replay(job.job_id for job in operator.dead_letters())
    """

    def __init__(self, settings: Settings | None = None, *, redis_client: Any = None) -> None:
        self.settings = settings or get_settings()
        self._redis = redis_client or connect(self.settings)
        self.api_keys = ApiKeys(self._redis)
        self.tenants = Tenants(self._redis)
        self.dispatch = Dispatch(self._redis, self.settings)
        self.ledger = Ledger(self._redis, self.settings)
        self.cache = ImageCache(self._redis)
        self.webhook_deliveries = Deliveries(self._redis)
        self.signing_secrets = signing_secrets(self._redis, self.settings)
        self.quota_store = QuotaStore(self._redis, self.settings)
        self.quarantine = Quarantine(self._redis)
        self.stats = Stats(self._redis)
        self._jobs = JobStore(
            self._redis, self.settings.job_retention_s, self.settings.webhook_handoff_grace_s
        )

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> OperatorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- tenants -----------------------------------------------------------------------------

    def tenant_limits(self, tenant: str) -> TenantLimits:
        """A tenant's weight in the fair share and its caps, as the dispatcher applies them."""
        return self.dispatch.tenant_limits(tenant)

    def set_tenant_limits(
        self,
        tenant: str,
        *,
        weight: float | None = None,
        rate_rpm: float | None = None,
        max_concurrency: int | None = None,
        pools: Sequence[str] | None = None,
    ) -> TenantLimits:
        """Set a tenant's weight or caps (None: unchanged; negative: back to the default), or
        the pools its jobs may go to (empty: any)."""
        _check_tenant_name(tenant)
        errors = limit_errors(weight=weight, rate_rpm=rate_rpm, max_concurrency=max_concurrency)
        known = self.settings.pool_names()
        unknown = [p for p in pools or () if p not in known]
        if unknown:
            message = f"no pool named {', '.join(unknown)} (pools: {', '.join(known)})"
            errors = [*errors, FieldError("pools", message)]
        if errors:
            raise InvalidRequestError(errors)
        return self.dispatch.set_tenant_limits(
            tenant,
            weight=weight,
            rate_rpm=rate_rpm,
            max_concurrency=max_concurrency,
            pools=pools,
        )

    def pool_days(self, days: int = 31) -> list[PoolDay]:
        """Each pool's calls, images, spend, throttles and errors per UTC day and model (the
        last ``days`` days, newest first; days without calls left out)."""
        today = dt.datetime.now(dt.UTC).date()
        wanted = [(today - dt.timedelta(days=n)).isoformat() for n in range(max(1, days))]
        found = PoolStats(self._redis).days(self.settings.pool_names(), wanted)
        return sorted(found, key=lambda d: (d.day, d.pool, d.model_id), reverse=True)

    def tenant_shares(
        self,
        model_ids: Iterable[str] | None = None,
        *,
        tenant: str | None = None,
        busiest: int | None = None,
    ) -> list[TenantShare]:
        """Each tenant's share of each model's rate over the last minute, against its fair
        share (default: every allowed model, and any other with jobs waiting); only
        ``tenant``'s, or the ``busiest`` tenants', when given."""
        models = list(model_ids or self.dispatch.known_models())
        if tenant is not None:
            return self.dispatch.tenant_shares(tenant, models)
        return [
            share
            for model_id in models
            for share in self.dispatch.shares(model_id, busiest=busiest)
        ]

    def tenant_webhook(self, tenant: str) -> str | None:
        return self.tenants.webhook_url(tenant)

    def set_tenant_webhook(self, tenant: str, url: str | None) -> None:
        """A tenant's default webhook endpoint (None removes it); vetted like a job's."""
        if url is not None:
            try:
                vet_configured(url, self.settings)
            except WebhookUrlError as e:
                raise InvalidRequestError([FieldError("webhook_url", str(e))]) from e
        self.tenants.set_webhook_url(tenant, url)

    def signing_secrets_for(self, tenant: str | None) -> SigningSecrets:
        """The secrets that sign a tenant's webhooks (None: jobs without a tenant)."""
        if tenant is None:
            return self.signing_secrets
        return signing_secrets(self._redis, self.settings, tenant)

    # -- budgets and spend -------------------------------------------------------------------

    def budget(self, tenant: str) -> Budget:
        """The tenant's budgets (dollars per UTC day and month) and what happens past them."""
        return self.ledger.budget(tenant)

    def set_budget(self, budget: Budget) -> Budget:
        """Replace a tenant's budgets; effective for the next job released."""
        _check_tenant_name(budget.tenant)
        errors = budget_errors(budget)
        if errors:
            raise InvalidRequestError(errors)
        return self.ledger.set_budget(budget)

    def spend_now(self, tenant: str | None) -> tuple[PeriodSpend, PeriodSpend]:
        """The tenant's spend and reservations today and this month (UTC)."""
        day, month = periods()
        return self.ledger.period(tenant, day), self.ledger.period(tenant, month)

    def spend(self, tenant: str | None = None, days: int = 31) -> list[SpendRow]:
        """Images and spend per tenant, model and day (every tenant when None), newest first."""
        tenants = [tenant] if tenant else self.ledger.tenants()
        return [row for name in tenants for row in self.ledger.rows(name, days)]

    # -- the quota, dead letters ---------------------------------------------------------------

    def quota(self, model_ids: Iterable[str] | None = None) -> list[QuotaStatus]:
        """The shared Bedrock quota of each model (default: every allowed model)."""
        return [
            self.quota_store.status(model_id)
            for model_id in (model_ids or self.settings.allowed_model_ids)
        ]

    def dead_letters(self, limit: int = 1000) -> list[JobRecord]:
        """Failed jobs, oldest failure first."""
        return self._jobs.dead_letters(limit)

    def replay(self, job_ids: Iterable[str]) -> list[str]:
        """Queue failed jobs from the dead-letter set again; returns those replayed."""
        return self._jobs.replay(job_ids)


def _check_tenant_name(tenant: str) -> None:
    if not is_tenant_name(tenant):
        raise InvalidRequestError([FieldError("tenant", f"must match {TENANT_PATTERN}")])
