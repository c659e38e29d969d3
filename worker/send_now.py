"""Sending a finished job's webhooks at once, from the worker that finished it.

Before it finishes a job, the attempt reserves room on a few threads of this process
(``reserve``); the job's final transition then claims that many of its new deliveries for their
first attempt and queues no message for them (``JobStore.finish(send_now=...)``), and those
threads send them (``send``). This saves the webhooks queue's round trips and the claim's for
most deliveries. Nothing is lost when this process dies: the outbox entry of each claimed
delivery is due when its lease ends, and the sweeper queues it then. When every thread is busy,
nothing is reserved and the deliveries go to the webhooks queue at once, as any other. Retries
always wait in the outbox.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from imagegen.store.deliveries import DeliveryClaim

__all__ = ["SendNow"]

log = logging.getLogger("imagegen.webhooks")

# Deliveries waiting for a thread, per thread, before the rest go to the webhooks queue.
_WAITING_PER_THREAD = 8


class SendNow:
    """Sends claimed deliveries on ``threads`` threads, as far as room was reserved for them."""

    def __init__(self, send: Callable[[DeliveryClaim], object], threads: int) -> None:
        self._send = send
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="send-now")
        self._room = threading.BoundedSemaphore(threads * (1 + _WAITING_PER_THREAD))

    def reserve(self, most: int) -> int:
        """Room for up to ``most`` deliveries, as much as is free now (0 when the threads are
        all taken): pass it to ``send`` with what was claimed."""
        taken = 0
        while taken < most and self._room.acquire(blocking=False):
            taken += 1
        return taken

    def send(self, claims: Sequence[DeliveryClaim], reserved: int) -> None:
        """Send these claimed deliveries (at most ``reserved``), and give back the room they did
        not use."""
        for claim in claims[:reserved]:
            self._pool.submit(self._run, claim)
        for _ in range(reserved - min(reserved, len(claims))):
            self._room.release()

    def _run(self, claim: DeliveryClaim) -> None:
        try:
            self._send(claim)
        except Exception:
            # The outbox sends it again when its lease ends.
            log.exception(
                "webhook send failed; the outbox will send it",
                extra={"delivery_id": claim.delivery_id},
            )
        finally:
            self._room.release()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
