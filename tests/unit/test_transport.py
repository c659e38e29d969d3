"""The gate never drops a message it popped: when it fails on one (Redis went away while the
job was being stored or the message quarantined), the message goes back onto the end of its
queue that is popped next, once Redis answers again. On a private ``redis-server``, which the
tests stop and start."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Queue
from kombu.message import Message

from devstack.processes import ProcessGroup, free_port, redis_answers, redis_server_binary
from imagegen.messages import EMBED, GENERATE_TASK, task_message
from tests.conftest import require_service
from worker import transport
from worker.transport import GatedTransport

QUEUE = "interactive"


def raw_job(job_id: str) -> str:
    job = {"request": {"prompt": f"picture {job_id}"}}
    return task_message(GENERATE_TASK, job_id, [job_id], QUEUE, kwargs={"job": job})


class PrivateRedis:
    def __init__(self, log_dir: Path) -> None:
        binary = redis_server_binary()
        if binary is None:
            require_service("no redis-server binary")
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self._argv = [str(binary), "--bind", "127.0.0.1", "--port", str(port)]
        self._argv += ["--save", "", "--appendonly", "no"]
        self._processes = ProcessGroup(log_dir)
        self.start()

    def start(self) -> None:
        self._processes.spawn(
            "redis", self._argv, env=os.environ, ready=lambda: redis_answers(self.url, 0.2)
        )

    def kill(self) -> None:
        self._processes.stop("redis", sig=signal.SIGKILL)

    def stop_all(self) -> None:
        self._processes.stop_all()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=0.5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "logs")
    yield server
    server.stop_all()


@dataclass
class Consuming:
    """A worker's connection through our transport, consuming ``interactive``."""

    connection: Connection
    delivered: list[Message] = field(default_factory=list)
    # How many messages the consumer (Celery, in a worker) fails to take before it takes one.
    failures_left: int = 0

    def on_message(self, message: Message) -> None:
        if self.failures_left:
            self.failures_left -= 1
            msg = "the consumer failed to take the message"
            raise RuntimeError(msg)
        self.delivered.append(message)

    def pop_one(self) -> None:
        """One BRPOP and its handling, as the worker's event loop runs them."""
        with contextlib.suppress(Exception):  # whatever it raises, the message is what counts
            self.connection.drain_events(timeout=2)


@pytest.fixture
def consuming(private_redis: PrivateRedis) -> Iterator[Consuming]:
    connection = Connection(private_redis.url, transport=GatedTransport)
    consuming = Consuming(connection)
    consumer = Consumer(
        connection.channel(),
        queues=[Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)],
        on_message=consuming.on_message,
        accept=["json"],
    )
    consumer.consume()
    yield consuming
    connection.release()


def test_a_message_the_gate_failed_on_is_taken_next(
    private_redis: PrivateRedis,
    consuming: Consuming,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = private_redis.client()
    client.lpush(QUEUE, raw_job("first"), raw_job("second"))
    seen: list[str] = []

    def fails_once(raw: str, queue: str) -> dict[str, Any] | None:
        seen.append(json.loads(raw)["headers"]["id"])
        if len(seen) == 1:
            raise redis.ConnectionError("Redis went away while the job was being stored")
        return None

    monkeypatch.setattr(transport, "admit", fails_once)
    monkeypatch.setattr(transport, "_PAUSE_AFTER_PUT_BACK_S", 0.0, raising=False)
    consuming.pop_one()
    assert [json.loads(item)["headers"]["id"] for item in client.lrange(QUEUE, 0, -1)] == [
        "second",
        "first",
    ]
    consuming.pop_one()
    assert seen == ["first", "first"]
    assert client.llen(QUEUE) == 1


def test_a_message_the_consumer_failed_to_take_is_taken_next(
    private_redis: PrivateRedis, consuming: Consuming, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "_PAUSE_AFTER_PUT_BACK_S", 0.0, raising=False)
    private_redis.client().lpush(QUEUE, task_message(GENERATE_TASK, "J2", ["J2"], QUEUE))
    consuming.failures_left = 1
    consuming.pop_one()
    assert private_redis.client().llen(QUEUE) == 1
    consuming.pop_one()
    assert [message.headers["id"] for message in consuming.delivered] == ["J2"]


def test_a_popped_message_outlives_a_redis_restart_while_the_gate_works_on_it(
    private_redis: PrivateRedis,
    consuming: Consuming,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis dies (without persistence) while the gate stores a raw job; it comes back a
    second later, empty, and the message is back on its queue: it lived only in the worker."""
    message = raw_job("kept")
    private_redis.client().lpush(QUEUE, message)

    restart = threading.Timer(1.0, private_redis.start)

    def redis_dies(raw: str, queue: str) -> dict[str, Any] | None:
        private_redis.kill()
        restart.start()
        private_redis.client().lpush("the-gate-writing", raw)  # raises: Redis is down
        return None

    monkeypatch.setattr(transport, "admit", redis_dies)
    consuming.pop_one()
    restart.join()  # Redis answers again
    assert private_redis.client().lrange(QUEUE, 0, -1) == [message.encode()]
    assert consuming.delivered == []


def test_a_message_celery_could_not_read_reaches_it_rebuilt(
    private_redis: PrivateRedis, consuming: Consuming
) -> None:
    """Headers Celery would choke on never reach it: it gets our own envelope for the task."""
    envelope = json.loads(task_message(GENERATE_TASK, "J1", ["J1"], QUEUE, delivery_tag="t-1"))
    envelope["headers"].update({"expires": [], "timelimit": "abc", "eta": "soon", "x": "?"})
    private_redis.client().lpush(QUEUE, json.dumps(envelope))
    consuming.pop_one()
    [message] = consuming.delivered
    ours = json.loads(task_message(GENERATE_TASK, "J1", ["J1"], QUEUE, delivery_tag="t-1"))
    assert message.headers == ours["headers"]
    assert message.delivery_tag == "t-1"
    assert message.decode() == [["J1"], {}, EMBED]
