"""The processes' command lines, built in one place for the CLI and the local stack."""

from __future__ import annotations

import importlib
import os

import pytest

from imagegen.launcher import api_launch, flower_launch, worker_launch
from imagegen.settings import Settings, get_settings
from producer.api.http_protocol import BoundedH11Protocol
from producer.cli import main


def test_the_worker_concurrency_also_sizes_its_connection_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    launch = worker_launch(pool="threads", concurrency=48, loglevel="INFO", hostname="w@%h")
    argv = launch.argv
    assert argv[argv.index("--concurrency") + 1] == "48"
    assert argv[argv.index("--hostname") + 1] == "w@%h"
    assert launch.env == {"IMAGEGEN_WORKER_CONCURRENCY": "48", "MALLOC_ARENA_MAX": "2"}
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")  # an operator's own choice stands
    assert (
        worker_launch(pool="threads", concurrency=8, loglevel="INFO").env["MALLOC_ARENA_MAX"] == "4"
    )


def test_the_flower_password_never_reaches_the_command_line() -> None:
    launch = flower_launch(address="127.0.0.1", port=5555, db="f.db", basic_auth="admin:s3cret-pw")
    assert not [arg for arg in launch.argv if "s3cret" in arg]
    assert launch.env == {"FLOWER_BASIC_AUTH": "admin:s3cret-pw"}


def test_the_api_runs_the_factory_under_uvicorn() -> None:
    argv = api_launch(host="0.0.0.0", port=8000, workers=2).argv
    assert "producer.api:app_from_env" in argv
    assert argv[argv.index("--workers") + 1] == "2"
    assert "--no-proxy-headers" in argv  # only our own list of trusted proxies counts


def test_the_api_bounds_slow_and_oversized_requests() -> None:
    argv = api_launch(host="0.0.0.0", port=8000, max_header_bytes=8192, keep_alive_s=7).argv
    protocol = argv[argv.index("--http") + 1]
    module, _, name = protocol.partition(":")
    assert getattr(importlib.import_module(module), name) is BoundedH11Protocol
    assert argv[argv.index("--h11-max-incomplete-event-size") + 1] == "8192"
    assert argv[argv.index("--timeout-keep-alive") + 1] == "7"
    assert argv[argv.index("--ws") + 1] == "none"


def test_the_api_runs_one_process_per_usable_cpu_unless_told() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert Settings(_env_file=None).api_processes() == cpus  # type: ignore[call-arg]
    assert Settings(_env_file=None, api_workers=3).api_processes() == 3  # type: ignore[call-arg]


def test_imagegen_api_starts_the_processes_the_setting_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[list[str]] = []

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        started.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setenv("IMAGEGEN_API_WORKERS", "3")
    get_settings.cache_clear()
    try:
        for argv, expected in ((["api"], "3"), (["api", "--workers", "5"], "5")):
            with pytest.raises(SystemExit):
                main(argv)
            assert started[-1][started[-1].index("--workers") + 1] == expected
    finally:
        get_settings.cache_clear()
