"""A Redis primary that fails over: a real primary, two replicas and three Sentinels on this
machine (``devstack.sentinel``). The primary is SIGKILLed (or demoted by a Sentinel failover)
while clients run; the same client objects and the same Celery worker carry on with the
promoted replica, and every job a submit acknowledged is there."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devstack.processes import StackError, redis_server_binary
from devstack.sentinel import MASTER_NAME, SentinelCluster, redis_sentinel_binary
from devstack.stack import Stack, StackOptions
from imagegen.errors import ReplicaAckTimeoutError
from imagegen.records import JobStatus
from imagegen.redis.connection import connect
from imagegen.redis.failover import PRIMARY_CHECK_S
from imagegen.settings import Settings
from producer.client import Client
from tests.conftest import require_service
from tests.integration.conftest import FAST_RETRIES, wait_all

pytestmark = pytest.mark.integration

# Submitting goes on this long after the primary is killed (the failover takes ~2 s here).
SUBMIT_AFTER_KILL_S = 4.0
# Flower lists the worker again within this long after the worker consumes again.
FLOWER_SEES_WORKER_S = 20.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    if redis_server_binary() is None or redis_sentinel_binary() is None:
        require_service("redis-server and redis-sentinel are needed for the failover tests")
    try:
        running = SentinelCluster(tmp_path, replicas=2).start()
    except StackError as e:
        pytest.fail(f"the Sentinel cluster did not start: {e}")
    yield running
    running.stop()


def sentinel_settings(cluster: SentinelCluster) -> Settings:
    return Settings(
        redis_url=cluster.url,
        s3_bucket="test-bucket",
        _env_file=None,  # type: ignore[call-arg]
    )


def flower_sees_the_worker(stack: Stack, within_s: float) -> bool:
    """Whether Flower's ``/api/workers?refresh=1`` lists the worker within ``within_s``."""
    assert stack.flower_auth is not None
    basic = base64.b64encode(stack.flower_auth.encode()).decode()
    request = urllib.request.Request(
        stack.urls["flower"] + "/api/workers?refresh=1",
        headers={"Authorization": f"Basic {basic}"},
    )
    deadline = time.monotonic() + within_s
    while True:
        with urllib.request.urlopen(request, timeout=10) as answer:
            workers = json.load(answer)
        if [name for name in workers if name.startswith("worker@")]:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


def submit_retrying(client: Client, job_id: str, timeout_s: float = 15.0) -> str:
    """Submit as a caller does: a submit refused as retryable (no replica confirmed it yet, the
    new primary's replica still syncing) is sent again with the same job id."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.submit(job_id, job_id=job_id).job_id
        except (ReplicaAckTimeoutError, redis.RedisError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def writes_reach(client: Client, server: redis.Redis, within_s: float) -> bool:
    """Whether a write through the client lands on ``server`` within ``within_s``."""
    deadline = time.monotonic() + within_s
    mark = f"imagegen:test:probe:{time.monotonic_ns()}"
    while True:
        with contextlib.suppress(redis.RedisError):
            client._redis.set(mark, 1, ex=60)
            if server.exists(mark):
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


class Submitter(threading.Thread):
    """Submits jobs one after another, as a caller would: a submit that raised is retried with
    a new job; a job counts as acknowledged only when its submit returned."""

    def __init__(self, client: Client, tag: str) -> None:
        super().__init__(daemon=True)
        self.client, self.tag = client, tag
        self.acknowledged: list[str] = []
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.stop.is_set():
            index += 1
            try:
                job = self.client.submit(f"{self.tag} {index}", job_id=f"{self.tag}-{index}")
            except (ReplicaAckTimeoutError, redis.RedisError) as e:  # refused: not acknowledged
                self.failed.append(type(e).__name__)
                time.sleep(0.05)
                continue
            self.acknowledged.append(job.job_id)


def test_a_client_follows_a_killed_primary_and_no_acknowledged_job_is_lost(
    cluster: SentinelCluster,
) -> None:
    with Client(sentinel_settings(cluster)) as client:
        submitter = Submitter(client, "before-and-during")
        submitter.start()
        time.sleep(1.0)
        old = cluster.kill_primary()
        killed_at = time.monotonic()
        promoted = cluster.wait_for_promotion(old)
        failover_s = time.monotonic() - killed_at
        time.sleep(max(0.0, SUBMIT_AFTER_KILL_S - failover_s))
        submitter.stop.set()
        submitter.join(timeout=30)

        acknowledged = submitter.acknowledged
        assert len(acknowledged) > 20, "too few submits to show anything"
        # The same client, never rebuilt, reads every acknowledged job from the new primary.
        found = client.get_many(acknowledged)
        missing = [job_id for job_id, record in zip(acknowledged, found, strict=True) if not record]
        assert missing == []
        assert all(r is not None and r.status is JobStatus.QUEUED for r in found)
        # A primary without the Lua library (one restored without it, say) gets it again.
        cluster.client(promoted).function_flush()
        after = client.submit("after the failover", job_id="after")
        assert client.get(after.job_id).job_id == "after"
        assert cluster.client(promoted).function_list()
    direct = cluster.client(promoted)
    assert direct.exists("imagegen:job:after") == 1
    print(
        f"failover {failover_s:.1f} s; {len(acknowledged)} acknowledged, "
        f"{len(submitter.failed)} submits refused meanwhile: {sorted(set(submitter.failed))}"
    )


def test_a_demoted_primary_refusing_writes_is_left_for_the_new_one(
    cluster: SentinelCluster,
) -> None:
    """A Sentinel failover demotes the primary, which stays up and answers READONLY on the
    connections the client holds: the write goes to the new primary, with no error."""
    with Client(sentinel_settings(cluster)) as client:
        for index in range(5):  # connections to the old primary, pooled
            client.submit(f"before {index}", job_id=f"before-{index}")
        old = cluster.primary_port()
        sentinel = redis.Redis("127.0.0.1", cluster.sentinel_ports[0], decode_responses=True)
        assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        promoted = cluster.wait_for_promotion(old)
        # What the Sentinels do to the old primary within seconds, done at once.
        cluster.client(old).replicaof("127.0.0.1", promoted)
        assert cluster.client(old).info("replication")["role"] == "slave"

        job = client.submit("after the demotion", job_id="after-demotion")
        assert job.job_id == "after-demotion"
    assert cluster.client(promoted).exists("imagegen:job:after-demotion") == 1
    assert all(cluster.client(promoted).exists(f"imagegen:job:before-{i}") for i in range(5))


def test_a_replaced_primary_that_still_takes_writes_is_left_within_seconds(
    cluster: SentinelCluster,
) -> None:
    """After a failover the old primary can stay up as a primary (until the Sentinels turn it
    into a replica, seconds later, or for as long as it is cut off from them); whatever it takes
    then is lost when it resyncs. A client's pooled connections leave it once the Sentinels name
    the new primary, without waiting for it to refuse anything."""
    client = connect(sentinel_settings(cluster))
    for index in range(5):
        client.set(f"before-{index}", index)
    old = cluster.primary_port()
    sentinel = redis.Redis("127.0.0.1", cluster.sentinel_ports[0], decode_responses=True)
    assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
    promoted = cluster.wait_for_promotion(old)
    cluster.client(old).replicaof("NO", "ONE")  # still a primary, as if never told
    time.sleep(PRIMARY_CHECK_S * 2.5)

    client.set("after", 1)
    assert cluster.client(old).info("replication")["role"] == "master"
    assert cluster.client(promoted).get("after") == "1"
    assert cluster.client(old).get("after") is None


def test_a_celery_worker_carries_on_after_the_primary_is_killed(
    cluster: SentinelCluster, tmp_path: Path
) -> None:
    """The worker goes on after the primary is SIGKILLed, and again after the promoted replica
    is replaced in turn but stays up taking writes, cut off from the Sentinels: its task, release
    and broker connections leave it for the primary they name (before, it consumed from and
    wrote to the replaced primary, and jobs sent to the new one stayed queued)."""
    stack = Stack(
        StackOptions(
            run_dir=tmp_path / "stack",
            redis_url=cluster.url,
            worker_concurrency=4,
            extra_env=FAST_RETRIES,
            quota_rpm=6000,
            quota_burst=50,
            flower_port=0,
        )
    )
    try:
        stack.__enter__()
    except StackError as e:
        pytest.fail(f"the local stack did not start on Sentinel: {e}")
    try:
        with Client(stack.settings()) as client:
            before = [client.submit(f"before {i}").job_id for i in range(4)]
            assert all(r.status is JobStatus.SUCCEEDED for r in wait_all(client, before, 30))

            old = cluster.kill_primary()
            promoted = cluster.wait_for_promotion(old)
            after = [client.submit(f"after {i}").job_id for i in range(4)]
            records = wait_all(client, after, 45)
            assert all(r.status is JobStatus.SUCCEEDED for r in records)
            assert [r.s3_key for r in records if not r.s3_key] == []

            # Flower reaches the workers through the Sentinels too, after the failover (its
            # inspection right after the worker reconnected can go unanswered: asked again).
            assert flower_sees_the_worker(stack, within_s=FLOWER_SEES_WORKER_S)

            sentinel = redis.Redis("127.0.0.1", cluster.sentinel_ports[0], decode_responses=True)
            assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
            newest = cluster.wait_for_promotion(promoted)
            replaced = cluster.client(promoted)
            replaced.replicaof("NO", "ONE")
            # Cut off from the Sentinels: they cannot turn it into a replica.
            replaced.execute_command("ACL", "SETUSER", "default", "-replicaof", "-slaveof")
            # Every process leaves it within about a second (PRIMARY_CHECK_S); a job submitted
            # before the client did would be taken by it, and lost (docs/operations.md). Five
            # checks' time, and until the client's writes reach the new primary (at most ten):
            # with the suite on two processes, a loaded machine has fallen short of both 2.5
            # and 5 checks' time.
            time.sleep(PRIMARY_CHECK_S * 5)
            assert writes_reach(client, cluster.client(newest), within_s=PRIMARY_CHECK_S * 5)
            later = [submit_retrying(client, f"later-{i}") for i in range(4)]
            records = wait_all(client, later, 30)
            assert all(r.status is JobStatus.SUCCEEDED for r in records)
            assert all(cluster.client(newest).exists(f"imagegen:job:{job}") for job in later)
            assert replaced.info("replication")["role"] == "master"
        assert stack.processes.failed() == []  # the worker was never restarted
    finally:
        stack.stop()
