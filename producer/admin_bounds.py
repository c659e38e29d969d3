"""The bounds of every number an operator sets: a tenant's weight and caps, and its budgets.

Checked on every way in: the admin API refuses a value outside them with a 422 naming the field
(its request models use these bounds), and ``OperatorClient`` (the CLI, scripts) with an
``InvalidRequestError`` naming it. Infinity, NaN and numbers too large to mean anything are never
stored: the dispatcher and the budget checks would compare against them.
"""

from __future__ import annotations

import math

from imagegen.errors import FieldError
from imagegen.store.spend import Budget

__all__ = [
    "MAX_BUDGET_USD",
    "MAX_CONCURRENCY",
    "MAX_RATE_RPM",
    "MAX_WEIGHT",
    "budget_errors",
    "limit_errors",
]

MAX_WEIGHT = 1000
MAX_RATE_RPM = 1_000_000
MAX_CONCURRENCY = 100_000
MAX_BUDGET_USD = 1_000_000_000
_AMOUNTS = ("daily_hard", "daily_soft", "monthly_hard", "monthly_soft")


def _out_of_bounds(value: float, high: float) -> bool:
    return value > high or (isinstance(value, float) and not math.isfinite(value))


def limit_errors(
    *, weight: float | None, rate_rpm: float | None, max_concurrency: int | None
) -> list[FieldError]:
    """What is wrong with a change of a tenant's limits (a negative value, which clears one
    back to the default, is allowed)."""
    errors = []
    for name, value, high in (
        ("weight", weight, MAX_WEIGHT),
        ("rate_rpm", rate_rpm, MAX_RATE_RPM),
        ("max_concurrency", max_concurrency, MAX_CONCURRENCY),
    ):
        if value is not None and _out_of_bounds(value, high):
            errors.append(FieldError(name, f"must be a finite number, at most {high:,}"))
    return errors


def budget_errors(budget: Budget) -> list[FieldError]:
    """What is wrong with a tenant's budgets (each None, or dollars from 0 to the bound)."""
    errors = []
    for name in _AMOUNTS:
        value = getattr(budget, name)
        if value is not None and (value < 0 or _out_of_bounds(value, MAX_BUDGET_USD)):
            errors.append(FieldError(name, f"must be dollars from 0 to {MAX_BUDGET_USD:,}"))
    return errors
