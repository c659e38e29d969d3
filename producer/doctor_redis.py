"""The doctor's checks of what Redis holds: whether it keeps anything on disk, and whether the
webhooks of jobs without a tenant have a secret to be signed with."""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from imagegen.errors import SigningSecretMissingError
from imagegen.store.signing import fingerprint, signing_secrets
from producer.checks import Check

if TYPE_CHECKING:
    from redis import Redis

    from imagegen.settings import Settings

__all__ = ["persistence_check", "signing_secret_check"]

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
