"""Shared fixtures: real Redis (flushed per test), fakeredis with Lua, settings, the emulator.

A missing service skips a test on a developer machine and fails it under ``CI=true``. The
caller's own ``IMAGEGEN_*`` settings (``make dev``'s export lines pasted into the shell, say)
are set aside for the run: a test that needs a setting sets it. Only ``IMAGEGEN_TEST_*``, which
tell the tests where their Redis is, are read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from devstack.processes import free_port, redis_answers, redis_server_binary
from emulator import EmulatorConfig, EmulatorServer
from imagegen.settings import Settings
from tests import worker_redis

# Under xdist (make test): before the Redis URLs below are read.
worker_redis.use_a_redis_of_its_own()
ON_CI = os.environ.get("CI", "").lower() == "true"
TEST_REDIS_URL = os.environ.get("IMAGEGEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_SETTINGS_PREFIX = "IMAGEGEN_TEST_"
# The caller's settings, which the run sets aside (the report's header names them).
CALLERS_SETTINGS = sorted(
    name
    for name in os.environ
    if name.startswith("IMAGEGEN_") and not name.startswith(TEST_SETTINGS_PREFIX)
)


def pytest_unconfigure() -> None:
    worker_redis.stop()


def pytest_report_header() -> list[str]:
    if not CALLERS_SETTINGS:
        return []
    return [f"set aside for the run (the caller's settings): {', '.join(CALLERS_SETTINGS)}"]


@pytest.fixture(scope="session", autouse=True)
def _callers_settings_set_aside() -> Iterator[None]:
    """Before any stack or setting is made: what a test reads is what it set."""
    with pytest.MonkeyPatch.context() as patch:
        for name in CALLERS_SETTINGS:
            patch.delenv(name)
        yield


def require_service(reason: str) -> None:
    """Skip locally, fail under CI: a missing service must never pass silently in CI."""
    if ON_CI:
        pytest.fail(f"required service missing under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (one per test module)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        require_service("Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("playwright (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(autouse=True)
def _local_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials: nothing in the tests may reach AWS."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="session")
def real_redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as e:
        require_service(f"Redis at {TEST_REDIS_URL} does not answer ({e})")
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
def real_redis(real_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(real_redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=["fakeredis", "redis"])
def any_redis(request: pytest.FixtureRequest) -> Any:
    """The same test against fakeredis (with Lua) and against a real Redis server."""
    if request.param == "fakeredis":
        return fakeredis.FakeRedis(decode_responses=True)
    return request.getfixturevalue("real_redis")


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url=TEST_REDIS_URL,
        s3_bucket="test-bucket",
        s3_prefix="images",
        retry_base_s=0.01,
        retry_cap_s=0.1,
        rate_limit_rpm=60_000,  # the limiter is on, but never the thing a unit test waits for
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    """A default emulator (no latency, no quota, no faults) in this process."""
    server = EmulatorServer(EmulatorConfig()).start()
    yield server.url
    server.stop()


@pytest.fixture
def start_emulator() -> Iterator[Any]:
    """Start emulators with a given configuration; all stopped at the end of the test."""
    servers: list[EmulatorServer] = []

    def start(**config: Any) -> str:
        server = EmulatorServer(EmulatorConfig(**config)).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_redis_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start private ``redis-server`` processes with the given arguments (data in the test's
    temporary directory), on a free port or ``port`` (to start one again where another
    stopped); returns each one's URL. All stopped at the end of the test."""
    binary = redis_server_binary()
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, port: int | None = None) -> str:
        if binary is None:
            require_service("no redis-server binary")
        port = port or free_port()
        data = tmp_path / f"redis-{port}"
        data.mkdir(exist_ok=True)
        argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
        process = subprocess.Popen(
            [*argv, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append(process)
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(url, 0.2):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"redis-server {' '.join(args)} did not start")
            time.sleep(0.05)
        return url

    yield start
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=10)
