"""A Redis server of its own for each pytest-xdist worker (``make test`` runs the suite on two).

The suite's tests flush the databases they use, so two workers must never share a server. In an
xdist worker this plugin starts ``redis-server`` on a free port before the conftest files read
their settings, checks the server that answers there is the one it started, and points the
tests at it: ``IMAGEGEN_TEST_REDIS_URL`` and ``IMAGEGEN_TEST_REDIS_BASE``, which every test and
stack takes its databases from. A run without xdist (plain ``pytest``) changes nothing: it uses
the Redis on 127.0.0.1:6379. ``tests/conftest.py`` calls it first thing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import redis

from devstack.processes import free_port, redis_server_binary

_PORT_TRIES = 5
# This worker's server and its directory, once started.
_RUNNING: list[tuple[subprocess.Popen[bytes], str]] = []


def _served_by(port: int, pid: int) -> bool:
    """True once the server on ``port`` answers and says it is process ``pid``."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
    try:
        with contextlib.closing(client):
            return int(client.info("server")["process_id"]) == pid
    except (redis.RedisError, OSError):
        return False


def _start_server(workdir: str) -> tuple[subprocess.Popen[bytes], int]:
    binary = redis_server_binary()
    if binary is None:
        raise pytest.UsageError(
            "an xdist worker needs redis-server to start a Redis of its own "
            "(apt-get install redis-server)"
        )
    for _ in range(_PORT_TRIES):
        port = free_port()
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--databases",
                "16",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and server.poll() is None:
            if _served_by(port, server.pid):
                return server, port
            time.sleep(0.05)
        server.kill()  # the port was taken meanwhile, or the server never answered
        server.wait()
    raise pytest.UsageError(f"no Redis of this worker's own answered in {_PORT_TRIES} tries")


def _stop(server: subprocess.Popen[bytes], workdir: str) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    shutil.rmtree(workdir, ignore_errors=True)


def use_a_redis_of_its_own() -> None:
    """In an xdist worker: start this worker's Redis and point the tests at it (before anything
    reads ``IMAGEGEN_TEST_REDIS_*``); elsewhere, nothing."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker or _RUNNING:
        return
    workdir = tempfile.mkdtemp(prefix=f"imagegen-test-redis-{worker}-")
    server, port = _start_server(workdir)
    _RUNNING.append((server, workdir))
    atexit.register(stop)  # also when the worker ends without pytest_unconfigure
    base = f"redis://127.0.0.1:{port}"
    os.environ["IMAGEGEN_TEST_REDIS_BASE"] = base
    os.environ["IMAGEGEN_TEST_REDIS_URL"] = f"{base}/15"


def stop() -> None:
    """Stop this worker's Redis, if it started one."""
    while _RUNNING:
        _stop(*_RUNNING.pop())
