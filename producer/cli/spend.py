"""``imagegen spend | budgets | cache``: what tenants spend on Bedrock, their budgets, and the
image cache that saves them calls."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from imagegen.errors import InvalidRequestError
from imagegen.redis.keys import SHARED_CACHE_SCOPE
from imagegen.store.spend import Budget, rows_as_csv
from producer.cli.common import EXIT_BAD_INPUT, EXIT_OK, error, print_table
from producer.client import Client

__all__ = ["register"]

_AMOUNTS = ("daily_hard", "daily_soft", "monthly_hard", "monthly_soft")


def _amount(text: str) -> float | None:
    """Dollars, or ``none`` to remove that budget (argparse type)."""
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: dollars (0 or more) or none") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: dollars (0 or more) or none")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spend = commands.add_parser("spend", help="Bedrock spend per tenant, model and day")
    spend.add_argument("--tenant", help="only this tenant ('-': jobs without one)")
    spend.add_argument("--days", type=int, default=31, help="the last N days with spend")
    spend.add_argument(
        "--pools",
        action="store_true",
        help="per pool (account and Region) instead: calls, images, spend, throttles, errors",
    )
    output = spend.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV on stdout")
    output.add_argument("--json", action="store_true")
    spend.set_defaults(handler=_spend)

    budgets = commands.add_parser("budgets", help="a tenant's budgets: show, set")
    actions = budgets.add_subparsers(dest="budgets_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="budgets, today's and this month's spend")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true")
    change = actions.add_parser(
        "set", help="change budgets in dollars (none removes one); the rest stay as they are"
    )
    change.add_argument("tenant")
    for name in _AMOUNTS:
        change.add_argument(f"--{name.replace('_', '-')}", type=_amount, default=argparse.SUPPRESS)
    change.add_argument(
        "--on-exceed",
        choices=["wait", "fail"],
        default=argparse.SUPPRESS,
        help="past a hard budget: wait for the next period, or end budget_exceeded",
    )
    change.add_argument("--json", action="store_true")
    budgets.set_defaults(handler=_budgets)

    cache = commands.add_parser("cache", help="the image cache of fixed-seed jobs: purge, share")
    cache_actions = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    purge = cache_actions.add_parser("purge", help="forget cached images (jobs in flight stay)")
    scope = purge.add_mutually_exclusive_group(required=True)
    scope.add_argument("--tenant", help="one tenant's ('-': jobs without one)")
    scope.add_argument("--shared", action="store_true", help="the scope tenants share")
    scope.add_argument("--all", action="store_true", help="every scope's")
    share = cache_actions.add_parser(
        "share", help="let a tenant use the cache shared by every tenant that opted in"
    )
    share.add_argument("tenant")
    share.add_argument("state", choices=["on", "off"])
    cache.set_defaults(handler=_cache)


def _cache(client: Client, args: argparse.Namespace) -> int:
    if args.cache_command == "share":
        client.operator.cache.set_shared(args.tenant, args.state == "on")
        print(f"{args.tenant}: shared cache {args.state}")
        return EXIT_OK
    scope = None if args.all else SHARED_CACHE_SCOPE if args.shared else args.tenant
    print(f"{client.operator.cache.purge(scope)} cached images forgotten")
    return EXIT_OK


def _spend(client: Client, args: argparse.Namespace) -> int:
    if args.pools:
        return _pool_spend(client, args)
    rows = client.operator.spend(args.tenant, args.days)
    if args.csv:
        print(rows_as_csv(rows), end="")
        return EXIT_OK
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows]))
        return EXIT_OK
    table = [("tenant", "day", "model", "images", "spend $")]
    table += [(r.tenant, r.period, r.model_id, str(r.images), f"{r.spend_usd:.2f}") for r in rows]
    print_table(table)
    return EXIT_OK


def _pool_spend(client: Client, args: argparse.Namespace) -> int:
    days = client.operator.pool_days(args.days)
    if args.json:
        print(json.dumps([dataclasses.asdict(d) for d in days]))
        return EXIT_OK
    header = ("pool", "day", "model", "calls", "images", "spend $", "throttles", "errors")
    rows = [
        (
            d.pool,
            d.day,
            d.model_id,
            str(d.calls),
            str(d.images),
            f"{d.spent_usd:.2f}",
            str(d.throttles),
            ", ".join(f"{code} {n}" for code, n in sorted(d.errors_by_code.items())) or "0",
        )
        for d in days
    ]
    if args.csv:
        print(",".join(header))
        for row in rows:
            print(",".join(f'"{cell}"' if "," in cell else cell for cell in row))
        return EXIT_OK
    print_table([header, *rows])
    return EXIT_OK


def _budgets(client: Client, args: argparse.Namespace) -> int:
    budget = client.operator.budget(args.tenant)
    if args.budgets_command == "set":
        given = {name: getattr(args, name) for name in (*_AMOUNTS, "on_exceed") if name in args}
        try:
            budget = client.operator.set_budget(dataclasses.replace(budget, **given))
        except (ValueError, InvalidRequestError) as e:
            error(str(e))
            return EXIT_BAD_INPUT
    today, month = client.operator.spend_now(args.tenant)
    if args.json:
        found: dict[str, Any] = {
            "budget": dataclasses.asdict(budget),
            "today": dataclasses.asdict(today),
            "this_month": dataclasses.asdict(month),
        }
        print(json.dumps(found))
        return EXIT_OK
    print(_describe(budget))
    for period in (today, month):
        crossed = ", soft budget crossed" if period.soft_budget_crossed else ""
        print(
            f"  {period.period[2:]}: spent ${period.spent_usd:.2f}, "
            f"reserved ${period.reserved_usd:.2f}{crossed}"
        )
    return EXIT_OK


def _describe(budget: Budget) -> str:
    def money(value: float | None) -> str:
        return "none" if value is None else f"${value:.2f}"

    return (
        f"{budget.tenant}: daily hard {money(budget.daily_hard)}, soft "
        f"{money(budget.daily_soft)}; monthly hard {money(budget.monthly_hard)}, soft "
        f"{money(budget.monthly_soft)}; past a hard budget: {budget.on_exceed}"
    )
