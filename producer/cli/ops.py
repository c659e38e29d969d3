"""``imagegen quota | dlq | quarantine | webhook-secret | webhooks | keys | tenant-webhook |
tenants``: operating."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, datetime

from imagegen.errors import (
    InvalidRequestError,
    SigningSecretMissingError,
    SigningSecretSettingError,
)
from imagegen.store.signing import SigningSecrets, new_secret, secret_problem
from producer.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    error,
    parse_time_ms,
    print_table,
)
from producer.client import Client

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quota = commands.add_parser("quota", help="show the shared Bedrock quota per model")
    quota.add_argument("--model-id", action="append", help="only this model (repeatable)")
    quota.add_argument("--json", action="store_true")
    quota.set_defaults(handler=_quota)

    dlq = commands.add_parser("dlq", help="failed jobs: list them, replay them")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_list = dlq_commands.add_parser("list", help="list failed jobs, oldest first")
    dlq_list.add_argument("--json", action="store_true")
    replay = dlq_commands.add_parser("replay", help="queue failed jobs again")
    replay.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    replay.add_argument("--all", action="store_true", help="every job in the dead-letter set")
    dlq.set_defaults(handler=_dlq)

    _register_webhook_secret(commands)

    webhooks = commands.add_parser("webhooks", help="webhook deliveries: log, redeliver, recover")
    webhook_commands = webhooks.add_subparsers(
        dest="webhooks_command", required=True, metavar="ACTION"
    )
    webhook_log = webhook_commands.add_parser("log", help="a job's deliveries and attempts")
    webhook_log.add_argument("job_id")
    webhook_log.add_argument("--json", action="store_true")
    redeliver = webhook_commands.add_parser("redeliver", help="send a job's webhooks again")
    redeliver.add_argument("job_id")
    recover = webhook_commands.add_parser(
        "recover", help="send again every delivery that ran out of retries since TIME"
    )
    recover.add_argument(
        "--since",
        required=True,
        type=parse_time_ms,
        help="ISO 8601 time (2026-11-25T10:00:00Z) or a duration ago (90m, 2h)",
    )
    webhooks.set_defaults(handler=_webhooks)

    api_keys = commands.add_parser("keys", help="API keys: create, list, revoke")
    key_commands = api_keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = key_commands.add_parser("create", help="a new key for a tenant (shown once)")
    create.add_argument("--tenant", required=True)
    key_commands.add_parser("list", help="every key: id, tenant, created")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    api_keys.set_defaults(handler=_keys)

    quarantine = commands.add_parser(
        "quarantine", help="messages set aside as not tasks of ours: list, drop"
    )
    quarantine_commands = quarantine.add_subparsers(
        dest="quarantine_command", required=True, metavar="ACTION"
    )
    quarantine_list = quarantine_commands.add_parser("list", help="newest first, with reasons")
    quarantine_list.add_argument("--limit", type=int, default=100)
    quarantine_list.add_argument("--json", action="store_true", help="with the messages")
    drop = quarantine_commands.add_parser("drop", help="forget entries by id, or --all")
    drop.add_argument("entry_ids", nargs="*", metavar="ENTRY_ID")
    drop.add_argument("--all", action="store_true")
    quarantine.set_defaults(handler=_quarantine)

    tenant_webhook = commands.add_parser(
        "tenant-webhook", help="a tenant's default webhook endpoint"
    )
    tenant_webhook.add_argument("tenant")
    tenant_webhook.add_argument("url", nargs="?", help="omit to show it")
    tenant_webhook.add_argument("--clear", action="store_true", help="remove it")
    tenant_webhook.set_defaults(handler=_tenant_webhook)
    _register_tenants(commands)


def _register_webhook_secret(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    secret = commands.add_parser(
        "webhook-secret",
        help="show, create or rotate a signing secret (global or a tenant's)",
        description="Signing secrets are never made on a read: with none stored, showing one "
        "fails and deliveries wait until --create (or IMAGEGEN_WEBHOOK_SECRET for jobs without "
        "a tenant).",
    )
    action = secret.add_mutually_exclusive_group()
    action.add_argument(
        "--create",
        action="store_true",
        help="store a fresh first secret (refused when one is stored)",
    )
    action.add_argument(
        "--restore",
        action="store_true",
        help="store the secret receivers already hold, read from stdin (refused when one is "
        "stored): after Redis lost it",
    )
    action.add_argument(
        "--rotate",
        action="store_true",
        help="new primary secret; the old one keeps signing for the overlap",
    )
    action.add_argument(
        "--generate",
        action="store_true",
        help="print a fresh secret and store nothing (for IMAGEGEN_WEBHOOK_SECRET)",
    )
    secret.add_argument(
        "--tenant", help="this tenant's secret (default: the one for jobs without a tenant)"
    )
    secret.set_defaults(handler=_webhook_secret)


def _register_tenants(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tenants = commands.add_parser(
        "tenants", help="a tenant's weight in the fair share and its caps: show, set"
    )
    tenant_commands = tenants.add_subparsers(
        dest="tenants_command", required=True, metavar="ACTION"
    )
    show = tenant_commands.add_parser("show", help="weight and caps as the dispatcher applies")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true")
    limits = tenant_commands.add_parser(
        "set", help="set a weight or a cap (a negative value goes back to the settings' default)"
    )
    limits.add_argument("tenant")
    limits.add_argument("--weight", type=float, help="share of the rate against others' weights")
    limits.add_argument("--rate-rpm", type=float, help="jobs per minute it may start (0: no cap)")
    limits.add_argument(
        "--max-concurrency", type=int, help="jobs released or running at once (0: no cap)"
    )
    limits.add_argument(
        "--pools", help="comma-separated pools its jobs may go to ('' for any: residency off)"
    )
    limits.add_argument("--json", action="store_true")
    tenants.set_defaults(handler=_tenants)


def _tenants(client: Client, args: argparse.Namespace) -> int:
    if args.tenants_command == "set":
        try:
            found = client.operator.set_tenant_limits(
                args.tenant,
                weight=args.weight,
                rate_rpm=args.rate_rpm,
                max_concurrency=args.max_concurrency,
                pools=None
                if args.pools is None
                else [p.strip() for p in args.pools.split(",") if p.strip()],
            )
        except (ValueError, InvalidRequestError) as e:
            error(str(e))
            return EXIT_BAD_INPUT
    else:
        found = client.operator.tenant_limits(args.tenant)
    if args.json:
        print(json.dumps(dataclasses.asdict(found)))
        return EXIT_OK
    rate = f"{found.rate_rpm:g}/min" if found.rate_rpm else "no cap"
    concurrency = str(found.max_concurrency) if found.max_concurrency else "no cap"
    pools = ", ".join(found.pools) if found.pools else "any"
    print(
        f"{found.tenant}: weight {found.weight:g}, rate {rate}, concurrency {concurrency}, "
        f"pools {pools}"
    )
    return EXIT_OK


def _quarantine(client: Client, args: argparse.Namespace) -> int:
    if args.quarantine_command == "list":
        entries = client.operator.quarantine.list(args.limit)
        if args.json:
            print(json.dumps([dataclasses.asdict(e) for e in entries]))
            return EXIT_OK
        rows = [("entry id", "at", "queue", "reason", "bytes", "detail")]
        rows += [
            (
                e.entry_id,
                datetime.fromtimestamp(e.at_ms / 1000, tz=UTC).isoformat(timespec="seconds"),
                e.queue,
                e.reason,
                str(e.size_bytes),
                e.detail[:60],
            )
            for e in entries
        ]
        print_table(rows)
        return EXIT_OK
    if not args.all and not args.entry_ids:
        error("quarantine drop: name ENTRY_IDs or pass --all")
        return EXIT_BAD_INPUT
    dropped = client.operator.quarantine.drop(None if args.all else args.entry_ids)
    print(f"{dropped} dropped")
    return EXIT_OK


def _quota(client: Client, args: argparse.Namespace) -> int:
    statuses = client.operator.quota(args.model_id)
    shares = client.operator.tenant_shares(args.model_id)
    if args.json:
        print(
            json.dumps(
                {
                    "quotas": [dataclasses.asdict(s) for s in statuses],
                    "tenants": [dataclasses.asdict(s) for s in shares],
                }
            )
        )
        return EXIT_OK
    rows = [("model", "configured/min", "effective/min", "tokens", "calls 1m", "throttles 1m")]
    rows += [
        (
            s.model_id,
            f"{s.configured_rpm:g}",
            f"{s.effective_rpm:.1f}",
            f"{s.tokens:.2f}",
            str(s.calls_last_minute),
            str(s.throttles_last_minute),
        )
        for s in statuses
    ]
    print_table(rows)
    if shares:
        print()
        table = [("model", "tenant", "weight", "waiting", "released 1m", "share", "fair share")]
        table += [
            (
                t.model_id,
                t.tenant,
                f"{t.weight:g}",
                str(t.waiting),
                str(t.released_last_minute),
                f"{t.share:.0%}",
                "-" if t.fair_share is None else f"{t.fair_share:.0%}",
            )
            for t in shares
        ]
        print_table(table)
    return EXIT_OK


def _dlq(client: Client, args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        records = client.operator.dead_letters()
        if args.json:
            print(json.dumps([r.model_dump(mode="json") for r in records]))
            return EXIT_OK
        rows = [("job id", "failed at", "attempts", "error")]
        rows += [
            (
                r.job_id,
                r.finished_at.isoformat(timespec="seconds") if r.finished_at else "-",
                str(r.attempts),
                f"{r.error_code}: {(r.error_message or '')[:60]}",
            )
            for r in records
        ]
        print_table(rows)
        return EXIT_OK
    if not args.all and not args.job_ids:
        error("dlq replay: name JOB_IDs or pass --all")
        return EXIT_BAD_INPUT
    wanted = client.jobs.dead_letter_ids() if args.all else args.job_ids
    replayed = client.operator.replay(wanted)
    for job_id in replayed:
        print(job_id)
    skipped = sorted(set(wanted) - set(replayed))
    for job_id in skipped:
        error(f"{job_id} is not a failed job; not replayed")
    return EXIT_OK if not skipped else EXIT_NOT_FOUND


def _webhook_secret(client: Client, args: argparse.Namespace) -> int:
    if args.generate:
        print(new_secret())
        return EXIT_OK
    secrets = client.operator.signing_secrets_for(args.tenant)
    scope = f"tenant {args.tenant}" if args.tenant else "jobs without a tenant"
    try:
        if args.create or args.restore:
            return _create_secret(secrets, scope, restore=args.restore)
        if args.rotate:
            return _rotate_secret(secrets, scope, client.settings.webhook_secret_overlap_s)
        print(secrets.current())
    except SigningSecretSettingError as e:
        error(str(e))
        return EXIT_BAD_INPUT
    except SigningSecretMissingError as e:
        error(str(e))
        return EXIT_NOT_FOUND
    return EXIT_OK


def _rotate_secret(secrets: SigningSecrets, scope: str, overlap_s: int) -> int:
    had_one = secrets.exists()
    print(secrets.rotate())
    if not had_one:
        print(f"no secret was stored for {scope}: this is the first", file=sys.stderr)
    elif secrets.active()[1:]:
        print(f"the previous secret keeps signing for {overlap_s} s", file=sys.stderr)
    return EXIT_OK


def _create_secret(secrets: SigningSecrets, scope: str, *, restore: bool) -> int:
    given = sys.stdin.read().strip() if restore else None
    problem = secret_problem(given) if given is not None else None
    if problem is not None:
        error(f"the secret read from stdin {problem}")
        return EXIT_BAD_INPUT
    made = secrets.create(given)
    if made is None:
        error(f"{scope} already has a signing secret: show it, or --rotate")
        return EXIT_BAD_INPUT
    if given is None:
        print(made)
    print(f"stored the signing secret of {scope}", file=sys.stderr)
    return EXIT_OK


def _webhooks(client: Client, args: argparse.Namespace) -> int:
    deliveries = client.operator.webhook_deliveries
    if args.webhooks_command == "log":
        client.get(args.job_id)  # a clear "not found" for an unknown job
        found = deliveries.for_job(args.job_id)
        if args.json:
            print(json.dumps([d.model_dump(mode="json") for d in found]))
            return EXIT_OK
        for delivery in found:
            print(f"{delivery.delivery_id}  {delivery.state}  {delivery.url}")
            for entry in delivery.log:
                status = entry.status if entry.status is not None else "-"
                print(
                    f"  #{entry.attempt} {entry.at.isoformat(timespec='seconds')} "
                    f"status={status} {entry.latency_ms or 0} ms {entry.error or ''}".rstrip()
                )
        return EXIT_OK
    if args.webhooks_command == "redeliver":
        client.get(args.job_id)
        sent = deliveries.redeliver_job(args.job_id)
        if not sent:
            error(f"job {args.job_id} has no webhook deliveries")
            return EXIT_NOT_FOUND
    else:
        sent = deliveries.recover(args.since)
    for delivery_id in sent:
        print(delivery_id)
    return EXIT_OK


def _keys(client: Client, args: argparse.Namespace) -> int:
    api_keys = client.operator.api_keys
    if args.keys_command == "create":
        record, key = api_keys.create(args.tenant)
        print(key)
        print(
            f"key id {record.key_id} for tenant {record.tenant}; the key is shown only now",
            file=sys.stderr,
        )
        return EXIT_OK
    if args.keys_command == "revoke":
        if not api_keys.revoke(args.key_id):
            error(f"no key {args.key_id}")
            return EXIT_NOT_FOUND
        print(f"revoked {args.key_id}")
        return EXIT_OK
    rows = [("key id", "tenant", "created")]
    rows += [
        (
            k.key_id,
            k.tenant,
            datetime.fromtimestamp(k.created_ms / 1000, tz=UTC).isoformat(timespec="seconds"),
        )
        for k in api_keys.list()
    ]
    print_table(rows)
    return EXIT_OK


def _tenant_webhook(client: Client, args: argparse.Namespace) -> int:
    if args.clear or args.url:
        client.operator.set_tenant_webhook(args.tenant, None if args.clear else args.url)
    print(client.operator.tenant_webhook(args.tenant) or "(none)")
    return EXIT_OK
