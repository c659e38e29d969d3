"""Sending a finished job's webhooks at once, from the worker that finished it.

The job's final transition then queues no delivery message (``JobStore.finish(deliver_now=
True)``): a few threads of this process send the deliveries it returns, which saves the
webhooks queue's round trips for most deliveries. Nothing is lost when this process dies or its
threads are all busy: the outbox entry of each delivery is due after the hand-off grace, and the
sweeper queues it then; when every thread is busy, the deliveries go to the webhooks queue at
once, as any other. Retries always wait in the outbox.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from imagegen.store.deliveries import Deliveries

__all__ = ["SendNow"]

log = logging.getLogger("imagegen.webhooks")

# Deliveries waiting for a thread, per thread, before the rest go to the webhooks queue.
_WAITING_PER_THREAD = 8


class SendNow:
    """Sends deliveries on ``threads`` threads, or queues them when those are all taken."""

    def __init__(self, send: Callable[[str], object], deliveries: Deliveries, threads: int) -> None:
        self._send = send
        self._deliveries = deliveries
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="send-now")
        self._room = threading.BoundedSemaphore(threads * (1 + _WAITING_PER_THREAD))

    def __call__(self, delivery_ids: Sequence[str]) -> None:
        overflow = []
        for delivery_id in delivery_ids:
            if self._room.acquire(blocking=False):
                self._pool.submit(self._run, delivery_id)
            else:
                overflow.append(delivery_id)
        if overflow:
            self._deliveries.enqueue(overflow)

    def _run(self, delivery_id: str) -> None:
        try:
            self._send(delivery_id)
        except Exception:
            # The outbox sends it again after the grace.
            log.exception(
                "webhook send failed; the outbox will send it", extra={"delivery_id": delivery_id}
            )
        finally:
            self._room.release()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
