"""Prometheus metrics of one worker process, served on ``worker_metrics_port``.

Fleet-wide figures (jobs by status, queue depth, spend, the shared rate) come from Redis and are
served by the API's ``/metrics`` (``producer.api.metrics``); these are what one process saw.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

__all__ = [
    "BEDROCK_CALLS",
    "BEDROCK_LATENCY",
    "BOUGHT_TO_KEPT",
    "JOBS_FINISHED",
    "JOBS_RELEASED",
    "POOL_CALLS",
    "POOL_CIRCUIT_OPENS",
    "QUEUE_WAIT",
    "REDIS_LOSSES",
    "RETRIES",
    "WEBHOOK_DELIVERIES",
    "WEBHOOK_SECRET_CHANGES",
    "WEBHOOK_SECRET_MISSING",
    "serve_metrics",
]

log = logging.getLogger("imagegen.metrics")

BEDROCK_LATENCY = Histogram(
    "imagegen_worker_bedrock_latency_seconds",
    "InvokeModel latency, successful calls",
    ["model"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
# How long a bought image existed only in a worker's memory: from InvokeModel's answer until it
# was uploaded to S3 or parked in Redis. A worker killed inside this window loses a paid image.
BOUGHT_TO_KEPT = Histogram(
    "imagegen_worker_bought_to_kept_seconds",
    "From Bedrock's answer until the image was uploaded or parked",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BEDROCK_CALLS = Counter(
    "imagegen_worker_bedrock_calls_total",
    "InvokeModel calls by outcome (image, filtered, or the error code)",
    ["model", "outcome"],
)
POOL_CALLS = Counter(
    "imagegen_worker_pool_calls_total",
    "InvokeModel calls by pool and outcome (image, filtered, or the error code)",
    ["pool", "region", "model", "outcome"],
)
POOL_CIRCUIT_OPENS = Counter(
    "imagegen_worker_pool_circuit_opens_total",
    "Pools' circuits opened (access denied, no subscription, no such model in the Region)",
    ["pool", "model", "code"],
)
QUEUE_WAIT = Histogram(
    "imagegen_worker_queue_wait_seconds",
    "From submission to the start of a job's first attempt, by tenant",
    ["model", "tenant"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800, 3600),
)
JOBS_RELEASED = Counter(
    "imagegen_worker_jobs_released_total",
    "Jobs this process's release loop released to the Celery queues",
    ["model"],
)
JOBS_FINISHED = Counter(
    "imagegen_worker_jobs_total",
    "Jobs this process took to a final status",
    ["model", "status"],
)
RETRIES = Counter("imagegen_worker_retries_total", "Retries scheduled, by error code", ["code"])
LEASES_LOST = Counter(
    "imagegen_worker_leases_lost_total",
    "Attempts that found their job's lease gone (taken back by the redrive) when they ended",
)
WEBHOOK_DELIVERIES = Counter(
    "imagegen_worker_webhook_deliveries_total",
    "Webhook delivery attempts by outcome",
    ["outcome"],
)

WEBHOOK_SECRET_MISSING = Counter(
    "imagegen_worker_webhook_secret_missing_total",
    "Deliveries put back to wait because no signing secret is stored for their job's scope",
    ["scope"],
)
WEBHOOK_SECRET_CHANGES = Counter(
    "imagegen_worker_webhook_secret_changes_total",
    "Changes of the secret this process signs with: rotated (the previous one still signs) or "
    "replaced (it does not)",
    ["how"],
)
REDIS_LOSSES = Counter(
    "imagegen_worker_redis_losses_total",
    "Times Redis was found with less than its mark in S3 remembers: emptied, replaced (another "
    "epoch) or behind (fewer submissions)",
    ["kind"],
)
LOST_IMAGES_ADOPTED = Counter(
    "imagegen_worker_lost_images_adopted_total",
    "Jobs submitted again after Redis lost their record that adopted their image from S3 "
    "instead of buying it again",
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Serve /metrics on ``host:port`` (port 0: not at all); a port already taken is logged, not
    fatal."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except OSError as e:
        log.warning("worker metrics not served", extra={"port": port, "error": str(e)})
    else:
        log.info("worker metrics served", extra={"host": host, "port": port})
