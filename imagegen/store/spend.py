"""Spend: each tenant's budgets, and its ledger of what Bedrock billed, per UTC day and month.

The dispatcher reserves a job's price in its tenant's day and month ledgers when it releases it
(``dispatch_release.lua``), and pauses a tenant's queue while its hard budget has no room (or ends
the job ``budget_exceeded``, as the tenant chose). A bought image turns the reservation into spend
(``job_bought.lua``, ``JobStore.book``); a job that ends without one gives its reservation back.
Periods are the Redis clock's UTC days and months (``scripts/lib/clock.lua``). Amounts are whole
micro-dollars in Redis, so sums never drift.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from imagegen.redis import keys
from imagegen.redis.codecs import MICRO_USD
from imagegen.redis.scripts import Scripts
from imagegen.settings import SECONDS_PER_DAY, Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = [
    "Budget",
    "Ledger",
    "OnExceed",
    "PeriodSpend",
    "SpendRow",
    "periods",
    "rows_as_csv",
    "to_micro",
]

OnExceed = Literal["wait", "fail"]
# Tenants one spend_snapshot call reads (about 0.5 ms of Redis time).
SNAPSHOT_TENANTS = 50
_BUDGET_FIELDS = (
    "budget_daily_hard",
    "budget_daily_soft",
    "budget_monthly_hard",
    "budget_monthly_soft",
)


def to_micro(usd: float) -> int:
    return round(usd * MICRO_USD)


def ledger_ttl_s(retention_days: int) -> int:
    """How long a day's or a month's ledger is kept."""
    return retention_days * SECONDS_PER_DAY


def periods(now_s: float | None = None) -> tuple[str, str]:
    """Today's and this month's ledger names (UTC): ``d:YYYY-MM-DD``, ``m:YYYY-MM``."""
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if now_s is None else now_s))
    return f"d:{day}", f"m:{day[:7]}"


@dataclass(frozen=True)
class Budget:
    """A tenant's budgets in dollars (None: none) and what happens to a job past a hard one:
    ``wait`` for the next period (or a higher budget), or end ``budget_exceeded``."""

    tenant: str
    daily_hard: float | None = None
    daily_soft: float | None = None
    monthly_hard: float | None = None
    monthly_soft: float | None = None
    on_exceed: OnExceed = "wait"


@dataclass(frozen=True)
class SpendRow:
    """One tenant's spend on one model in one day, and what the cache saved it."""

    tenant: str
    period: str
    model_id: str
    images: int
    spend_usd: float
    cache_hits: int = 0
    saved_usd: float = 0.0  # what the cache hits would have cost


@dataclass(frozen=True)
class PeriodSpend:
    """One tenant's ledger for one period: spent, reserved now, and whether a soft budget was
    crossed."""

    tenant: str
    period: str
    spent_usd: float
    reserved_usd: float
    soft_budget_crossed: bool


class Ledger:
    """Budgets and spend on one Redis client (built with ``decode_responses=True``)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._scripts = Scripts.of(redis)

    @property
    def ttl_s(self) -> int:
        return ledger_ttl_s(self._settings.spend_retention_days)

    # -- budgets -----------------------------------------------------------------------------

    def budget(self, tenant: str) -> Budget:
        raw = self._redis.hmget(keys.tenant_key(tenant), [*_BUDGET_FIELDS, "budget_on_exceed"])
        return _budget(tenant, raw)

    def set_budget(self, budget: Budget) -> Budget:
        """Replace the tenant's budgets (a None amount: no budget of that kind)."""
        amounts = (budget.daily_hard, budget.daily_soft, budget.monthly_hard, budget.monthly_soft)
        if any(a is not None and a < 0 for a in amounts):
            msg = "a budget is an amount of dollars, 0 or more"
            raise ValueError(msg)
        key = keys.tenant_key(budget.tenant)
        pipe = self._redis.pipeline(transaction=True)
        for name, amount in zip(_BUDGET_FIELDS, amounts, strict=True):
            if amount is None:
                pipe.hdel(key, name)
            else:
                pipe.hset(key, name, to_micro(amount))
        pipe.hset(key, "budget_on_exceed", budget.on_exceed)
        pipe.execute()
        # Queues paused for the old budget are looked at again by the next release.
        self._scripts.run(
            "tenant_resume", [], [budget.tenant, json.dumps(self._settings.tenant_weights)]
        )
        return self.budget(budget.tenant)

    # -- reports -----------------------------------------------------------------------------

    def period(self, tenant: str | None, period: str) -> PeriodSpend:
        raw = self._redis.hmget(keys.spend_key(tenant, period), ["spent", "reserved", "warned"])
        return _period_spend(tenant, period, raw)

    def tenants(self, most: int | None = None) -> list[str]:
        """Tenants with spend (or cache hits) within the ledgers' life; with ``most``, only the
        ones that spent most recently."""
        found = self._redis.zrange(
            keys.SPEND_TENANTS_KEY, 0, -1 if most is None else most - 1, desc=True
        )
        return sorted(str(t) for t in found)

    def snapshot(self, tenants: list[str]) -> list[tuple[str, PeriodSpend, PeriodSpend, Budget]]:
        """Today's and this month's spend and the budgets of ``tenants``: one command (a read
        function) per ``SNAPSHOT_TENANTS`` tenants, not three commands a tenant (their packing
        and parsing cost the API ~40 us each: 12 ms of a /metrics scrape for 100 tenants); the
        chunks keep each call short for the clients it holds up."""
        day, month = periods()
        found: list[Any] = []
        for start in range(0, len(tenants), SNAPSHOT_TENANTS):
            names = []
            for tenant in tenants[start : start + SNAPSHOT_TENANTS]:
                names += [
                    keys.spend_key(tenant, day),
                    keys.spend_key(tenant, month),
                    keys.tenant_key(tenant),
                ]
            found += self._scripts.run("spend_snapshot", names, [])
        return [
            (
                tenant,
                _period_spend(tenant, day, found[11 * i : 11 * i + 3]),
                _period_spend(tenant, month, found[11 * i + 3 : 11 * i + 6]),
                _budget(tenant, found[11 * i + 6 : 11 * i + 11]),
            )
            for i, tenant in enumerate(tenants)
        ]

    def rows(self, tenant: str | None, days: int = 31) -> list[SpendRow]:
        """Per model and day, newest day first, over the last ``days`` days with spend."""
        recent = sorted(
            (str(d) for d in self._redis.smembers(keys.spend_days_key(tenant))), reverse=True
        )[:days]
        pipe = self._redis.pipeline(transaction=False)
        for day in recent:
            pipe.hgetall(keys.spend_key(tenant, day))
        found = []
        for day, ledger in zip(recent, pipe.execute(), strict=True):
            models = sorted(
                {
                    str(field).partition("|")[2]
                    for field in ledger
                    if str(field).startswith(("images|", "hits|"))
                }
            )
            found += [
                SpendRow(
                    tenant=tenant or keys.NO_TENANT,
                    period=day.removeprefix("d:"),
                    model_id=model_id,
                    images=int(ledger.get(f"images|{model_id}", 0)),
                    spend_usd=int(ledger.get(f"spent|{model_id}", 0)) / MICRO_USD,
                    cache_hits=int(ledger.get(f"hits|{model_id}", 0)),
                    saved_usd=int(ledger.get(f"saved|{model_id}", 0)) / MICRO_USD,
                )
                for model_id in models
            ]
        return found


def _budget(tenant: str, raw: list[Any]) -> Budget:
    daily_hard, daily_soft, monthly_hard, monthly_soft = (
        None if not v else int(v) / MICRO_USD for v in raw[:4]
    )
    return Budget(
        tenant=tenant,
        daily_hard=daily_hard,
        daily_soft=daily_soft,
        monthly_hard=monthly_hard,
        monthly_soft=monthly_soft,
        on_exceed="fail" if raw[4] == "fail" else "wait",
    )


def _period_spend(tenant: str | None, period: str, raw: list[Any]) -> PeriodSpend:
    return PeriodSpend(
        tenant=tenant or keys.NO_TENANT,
        period=period,
        spent_usd=int(raw[0] or 0) / MICRO_USD,
        reserved_usd=int(raw[1] or 0) / MICRO_USD,
        soft_budget_crossed=bool(raw[2]),
    )


def rows_as_csv(rows: list[SpendRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tenant", "day", "model_id", "images", "spend_usd", "cache_hits", "saved_usd"])
    for row in rows:
        writer.writerow(
            [
                row.tenant,
                row.period,
                row.model_id,
                row.images,
                f"{row.spend_usd:.6f}",
                row.cache_hits,
                f"{row.saved_usd:.6f}",
            ]
        )
    return out.getvalue()
