"""A Redis primary, its replicas and three Sentinels on this machine: what a production Redis
that fails over looks like, for the failover tests and the replica-wait benchmark.

``SentinelCluster(run_dir).start()`` returns when the replicas are in sync and every Sentinel
knows the primary; ``url`` is the ``redis+sentinel://`` URL the service is given. ``kill_primary``
SIGKILLs the primary; ``wait_for_promotion`` returns the address of the replica the Sentinels
promoted. With ``proxied``, the first primary is reached only through a TCP proxy (its replicas,
the Sentinels and the clients alike), so ``partition_primary`` can cut it off while it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis

from devstack.processes import ProcessGroup, StackError, free_port, redis_server_binary
from devstack.tcpproxy import TcpProxy

__all__ = ["MASTER_NAME", "SentinelCluster", "redis_sentinel_binary"]

MASTER_NAME = "mymaster"
HOST = "127.0.0.1"
SENTINELS = 3
QUORUM = 2
# How long a silent primary takes to be judged down, and the longest a failover may take.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
_POLL_S = 0.05


def redis_sentinel_binary() -> str | None:
    """The system ``redis-sentinel`` (or ``redis-server``, which runs as one with --sentinel)."""
    return shutil.which("redis-sentinel") or (
        "/usr/bin/redis-sentinel" if os.access("/usr/bin/redis-sentinel", os.X_OK) else None
    )


@dataclass
class SentinelCluster:
    run_dir: Path
    replicas: int = 1
    sentinels: int = SENTINELS  # 0: a primary and its replicas only
    ports: list[int] = field(default_factory=list)  # primary, replicas..., then the Sentinels
    db: int = 0
    proxied: bool = False  # the first primary behind a TCP proxy that can partition it

    def __post_init__(self) -> None:
        self.processes = ProcessGroup(self.run_dir / "logs")
        needed = 1 + self.replicas + self.sentinels
        self.ports = self.ports or [free_port() for _ in range(needed)]
        if len(self.ports) != needed:
            msg = (
                f"{needed} ports are needed (a primary, {self.replicas} replicas, "
                f"{self.sentinels} Sentinels)"
            )
            raise ValueError(msg)
        self.redis_ports = self.ports[: 1 + self.replicas]
        self.sentinel_ports = self.ports[1 + self.replicas :]
        self.proxy = TcpProxy(self.redis_ports[0]) if self.proxied else None

    @property
    def first_primary_port(self) -> int:
        """Where the first primary is reached: its proxy's port, when it has one."""
        return self.proxy.port if self.proxy else self.redis_ports[0]

    @property
    def primary_url(self) -> str:
        """The first primary itself, not through the Sentinels."""
        return f"redis://{HOST}:{self.first_primary_port}/{self.db}"

    @property
    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/{self.db}"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SentinelCluster:
        server, sentinel = redis_server_binary(), redis_sentinel_binary()
        if server is None or (sentinel is None and self.sentinels):
            raise StackError("redis-server and redis-sentinel are needed (apt-get install both)")
        try:
            first, *replicas = self.redis_ports
            self._start_redis(server, "redis-primary", first)
            if self.proxy:
                self.proxy.start()
            primary = self.first_primary_port
            for index, port in enumerate(replicas, start=1):
                self._start_redis(server, f"redis-replica-{index}", port, replica_of=primary)
            self._wait_in_sync(primary)
            if self.sentinels:
                assert sentinel is not None
                for index, port in enumerate(self.sentinel_ports, start=1):
                    self._start_sentinel(sentinel, index, port, primary)
                self._wait_sentinels_agree(primary)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.processes.stop_all(grace_s=5)
        if self.proxy:
            self.proxy.stop()

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a test does --------------------------------------------------------------------

    def primary_port(self) -> int:
        """The primary's port as the Sentinels report it (the first that answers)."""
        reported = self._reported_primaries()
        if not reported:
            raise StackError("no Sentinel answers")
        return reported[0]

    def _reported_primaries(self) -> list[int]:
        found: list[int] = []
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(HOST, port, socket_timeout=1, decode_responses=True)
                with contextlib.closing(client):
                    # What clients read (SENTINEL MASTERS): the new primary once the failover
                    # ended, not the replica being promoted (GET-MASTER-ADDR-BY-NAME).
                    master = cast("dict[str, Any]", client.sentinel_master(MASTER_NAME))
                    found.append(int(master["port"]))
        return found

    def kill_primary(self) -> int:
        """SIGKILL the primary (no shutdown, nothing flushed); returns its port."""
        port = self.primary_port()
        self.processes.stop(self._name_of(port), signal.SIGKILL)
        return port

    def partition_primary(self) -> int:
        """Cut the first primary off from everyone (it keeps running); returns the port it
        was reached on."""
        if self.proxy is None:
            raise StackError("only a proxied primary can be partitioned")
        if self.primary_port() != self.proxy.port:
            raise StackError("the proxied primary is no longer the primary")
        self.proxy.partition()
        return self.proxy.port

    def heal_partition(self) -> None:
        """Reach the first primary again (the Sentinels then make it a replica)."""
        if self.proxy is not None:
            self.proxy.heal()

    def wait_for_promotion(self, old_port: int, timeout_s: float = 20.0) -> int:
        """The port of the replica the Sentinels promoted, once it runs as a primary and every
        Sentinel names it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                reported = set(self._reported_primaries())
                if len(reported) == 1 and old_port not in reported:
                    [port] = reported
                    if self.client(port).info("replication")["role"] == "master":
                        return port
            time.sleep(_POLL_S)
        raise StackError(f"no replica was promoted within {timeout_s:g} s")

    def pause_replica(self, index: int = 1, *, paused: bool = True) -> None:
        """SIGSTOP (or SIGCONT) a replica: its link stays up, it confirms nothing meanwhile."""
        sig = signal.SIGSTOP if paused else signal.SIGCONT
        self.processes.send_signal(f"redis-replica-{index}", sig)

    def client(self, port: int) -> redis.Redis:
        """A plain client of one server (not through the Sentinels)."""
        return redis.Redis(HOST, port, db=self.db, socket_timeout=2, decode_responses=True)

    # -- starting ----------------------------------------------------------------------------

    def _name_of(self, port: int) -> str:
        if self.proxy and port == self.proxy.port:
            return "redis-primary"
        index = self.redis_ports.index(port)
        return "redis-primary" if index == 0 else f"redis-replica-{index}"

    def _start_redis(
        self, binary: str, name: str, port: int, replica_of: int | None = None
    ) -> None:
        data_dir = self.run_dir / name
        # A replica's sync leaves a dump.rdb, which a server started here would load.
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--bind", HOST, "--port", str(port), "--dir", str(data_dir)]
        argv += ["--save", "", "--appendonly", "no", "--protected-mode", "yes"]
        argv += ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once
        if replica_of is not None:
            argv += ["--replicaof", HOST, str(replica_of)]
        self.processes.spawn(name, argv, env=os.environ, ready=lambda: self._answers(port))

    def _start_sentinel(self, binary: str, index: int, port: int, primary: int) -> None:
        config = self.run_dir / f"sentinel-{index}.conf"  # a Sentinel rewrites its own file
        config.write_text(
            f"port {port}\nbind {HOST}\nprotected-mode no\ndir {self.run_dir}\n"
            f"sentinel monitor {MASTER_NAME} {HOST} {primary} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.processes.spawn(
            f"sentinel-{index}",
            [binary, str(config)],
            env=os.environ,
            ready=lambda: self._answers(port),
        )

    def _answers(self, port: int) -> bool:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(HOST, port, socket_timeout=0.5, socket_connect_timeout=0.5)
            with contextlib.closing(client):
                return client.ping() is True
        return False

    def _wait_in_sync(self, primary: int, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        client = self.client(primary)
        while self._replicas_online(client) < self.replicas:
            if time.monotonic() > deadline:
                raise StackError(f"the replicas did not connect within {timeout_s:g} s")
            time.sleep(_POLL_S)

    @staticmethod
    def _replicas_online(client: redis.Redis) -> int:
        """Replicas done with their first sync (``connected_slaves`` counts those syncing)."""
        info = client.info("replication")
        return sum(
            1
            for name, value in info.items()
            if name.startswith("slave") and isinstance(value, dict) and value["state"] == "online"
        )

    def _wait_sentinels_agree(self, primary: int, timeout_s: float = 20.0) -> None:
        """Every Sentinel knows the primary, its replicas and the other Sentinels, so a
        failover can start as soon as the primary goes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(self._sentinel_ready(port, primary) for port in self.sentinel_ports):
                return
            time.sleep(_POLL_S)
        raise StackError(f"the Sentinels did not find each other within {timeout_s:g} s")

    def _sentinel_ready(self, port: int, primary: int) -> bool:
        with contextlib.suppress(redis.RedisError):
            client = redis.Redis(HOST, port, socket_timeout=1, decode_responses=True)
            with contextlib.closing(client):
                master = cast("dict[str, Any]", client.sentinel_master(MASTER_NAME))
                return (
                    int(master["port"]) == primary
                    and int(master["num-slaves"]) >= self.replicas
                    and int(master["num-other-sentinels"]) >= self.sentinels - 1
                )
        return False
