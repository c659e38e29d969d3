"""docker-compose.yml and ops/Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PYTHON_SERVICES = {"emulator", "s3", "s3-bucket", "worker", "flower"}
LONG_RUNNING = {"redis", "emulator", "s3", "worker", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_every_service_of_the_stack_is_there(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == LONG_RUNNING | {"s3-bucket"}


def test_python_services_share_one_image(compose: dict[str, Any]) -> None:
    images = {compose["services"][name]["image"] for name in PYTHON_SERVICES}
    assert images == {"bedrock-imagegen:local"}
    builds = {compose["services"][name]["build"]["dockerfile"] for name in PYTHON_SERVICES}
    assert builds == {"ops/Dockerfile"}


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = compose["services"][name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"


def test_dependencies_exist_and_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency == "s3-bucket" else "service_healthy"
            )
            assert rule["condition"] == expected, f"{name} -> {dependency}"
            if expected == "service_healthy":
                assert "healthcheck" in services[dependency]
    assert set(services["worker"]["depends_on"]) == {"redis", "emulator", "s3-bucket"}


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert compose["services"]["redis"]["volumes"]


def test_flower_requires_its_credentials(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["flower"]["command"])
    assert re.search(r"--basic-auth=\$\{FLOWER_BASIC_AUTH:\?", command)


def test_workers_point_at_the_services_by_name(compose: dict[str, Any]) -> None:
    env = compose["services"]["worker"]["environment"]
    assert env["IMAGEGEN_REDIS_URL"] == "redis://redis:6379/0"
    assert "emulator:4566" in env["IMAGEGEN_BEDROCK_ENDPOINT_URL"]
    assert "s3:5000" in env["IMAGEGEN_S3_ENDPOINT_URL"]


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()
    sources = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
