"""The doctor's checks of what Redis holds: whether it keeps anything on disk, whether it lost
data (its epoch against the mark in S3), and whether the webhooks of jobs without a tenant have
a secret to be signed with."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import redis
from botocore.exceptions import BotoCoreError, ClientError

from imagegen.epoch import EpochWatch
from imagegen.errors import SigningSecretMissingError
from imagegen.store.signing import fingerprint, signing_secrets
from producer.checks import Check

if TYPE_CHECKING:
    from redis import Redis

    from imagegen.settings import Settings

__all__ = ["loss_check", "persistence_check", "signing_secret_check"]

_PERSISTENCE_FIX = (
    "turn on the append-only file: appendonly yes and appendfsync everysec in redis.conf (and "
    "CONFIG SET appendonly yes on the running server), or the managed service's persistence"
)


def persistence_check(client: Redis) -> Check:
    """Warns when Redis keeps nothing on disk: a restart would come back empty."""
    name = "redis persistence"
    try:
        appendonly = str(client.config_get("appendonly").get("appendonly", ""))
        save = str(client.config_get("save").get("save", "")).strip()
    except redis.RedisError as e:
        return Check(
            name,
            "skip",
            f"could not check: Redis refused CONFIG GET ({str(e).splitlines()[0][:120]}), as "
            "managed services do",
            "make sure the service keeps data on disk (AOF) and has a replica",
        )
    if appendonly == "yes":
        return Check(name, "ok", "append-only file on")
    if save:
        return Check(
            name,
            "warn",
            f"snapshots only (save {save}): a crash loses every job, reservation and spend "
            "written since the last snapshot",
            _PERSISTENCE_FIX,
        )
    return Check(
        name,
        "warn",
        "Redis keeps nothing on disk (appendonly no, no snapshots): a restart comes back empty, "
        "losing every job, ledger, budget, API key and stored signing secret",
        _PERSISTENCE_FIX,
    )


def signing_secret_check(client: Redis, settings: Settings) -> Check:
    """Where the secret of jobs without a tenant comes from, or that there is none."""
    name = "webhook secret"
    secrets = signing_secrets(client, settings)
    try:
        primary = secrets.current()
    except SigningSecretMissingError:
        return Check(
            name,
            "warn",
            "no signing secret for jobs without a tenant: their webhooks wait, unsent",
            "set IMAGEGEN_WEBHOOK_SECRET (`imagegen webhook-secret --generate` prints one), or "
            "`imagegen webhook-secret --restore` the one receivers hold, or `--create` one",
        )
    except redis.RedisError as e:
        return Check(name, "skip", f"Redis did not answer: {str(e).splitlines()[0][:120]}")
    if secrets.from_settings:
        return Check(
            name, "ok", f"from IMAGEGEN_WEBHOOK_SECRET (fingerprint {fingerprint(primary)})"
        )
    return Check(
        name,
        "ok",
        f"kept in Redis (fingerprint {fingerprint(primary)}); IMAGEGEN_WEBHOOK_SECRET would "
        "survive a Redis that loses it",
    )


_LOSS_FIX = (
    "jobs, reservations and webhooks accepted before then may be gone: their images are in S3 "
    "under {prefix}/yyyy/mm/dd/{job_id}.{ext} (their jobs' facts in each object's metadata); "
    "`imagegen recover` lists the lost jobs they prove and `imagegen recover --apply` "
    "re-creates their records and webhooks; callers resubmit the others (with their job_id, a "
    "stored image is adopted, not bought again), and Redis must keep its data (see redis "
    "persistence)"
)


def loss_check(watch: EpochWatch, settings: Settings) -> Check:
    """Whether Redis holds less than the mark in S3 remembers, now or within the retention."""
    name = "redis data loss"
    try:
        verdict = watch.read()
    except (ClientError, BotoCoreError) as e:
        return Check(name, "skip", f"the mark in S3 cannot be read: {str(e)[:120]}")
    except redis.RedisError as e:
        return Check(name, "skip", f"Redis did not answer: {str(e).splitlines()[0][:120]}")
    fix = _LOSS_FIX.replace("{prefix}", settings.s3_prefix.strip("/"))
    if verdict.lost:
        return Check(name, "warn", f"{verdict.describe()} (no worker has noticed yet)", fix)
    found = verdict.found
    lost_s = time.time() - found.lost_at_ms / 1000
    if found.lost_kind and lost_s < settings.job_retention_s:
        hours = lost_s / 3600
        return Check(
            name,
            "warn",
            f"Redis lost data {hours:.1f} h ago ({found.lost_kind}; at least "
            f"{found.lost_submissions} accepted submissions gone)",
            fix,
        )
    if verdict.mark is None:
        return Check(name, "skip", "no mark in S3 yet: a worker writes one within seconds")
    return Check(name, "ok", verdict.describe())
