"""``imagegen`` from a shell, against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devstack.stack import Stack

pytestmark = pytest.mark.integration


def imagegen(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_submit_wait_json_prints_one_record_and_saves_the_image(
    stack: Stack, tmp_path: Path
) -> None:
    target = tmp_path / "coffee.jpg"
    done = imagegen(
        stack,
        "submit",
        "Cozy coffee shop interior with warm lighting",
        "--aspect-ratio",
        "3:2",
        "--output-format",
        "jpeg",
        "--negative-prompt",
        "cluttered, dark, empty",
        "--seed",
        "7",
        "--wait",
        "--output",
        str(target),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # exactly one JSON document, nothing else
    assert record["status"] == "succeeded"
    assert record["seed"] == 7
    assert record["request"]["negative_prompt"] == "cluttered, dark, empty"
    with Image.open(target) as image:
        assert (image.format, image.size) == ("JPEG", (1216, 832))

    status = imagegen(stack, "status", record["job_id"], "--json")
    assert json.loads(status.stdout) == record
    human = imagegen(stack, "status", record["job_id"])
    assert record["job_id"] in human.stdout
    assert "succeeded" in human.stdout


def test_submit_without_wait_returns_a_queued_job_that_wait_follows(stack: Stack) -> None:
    queued = json.loads(imagegen(stack, "submit", "a windmill", "--json").stdout)
    assert queued["status"] == "queued"
    waited = imagegen(stack, "wait", queued["job_id"], "--json")
    assert waited.returncode == 0
    assert json.loads(waited.stdout)["status"] == "succeeded"


def test_bad_input_names_the_field_and_exits_2(stack: Stack) -> None:
    done = imagegen(stack, "submit", "a", "--seed", "-5", "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "request.seed" in done.stderr


def test_a_filtered_job_exits_1(stack: Stack) -> None:
    done = imagegen(stack, "submit", "forbidden fruit", "--wait")
    assert done.returncode == 1
    assert "filtered" in done.stdout


def test_unknown_job_exits_4(stack: Stack) -> None:
    done = imagegen(stack, "status", "01NOSUCHJOB")
    assert done.returncode == 4
    assert "not found" in done.stderr


def test_unreachable_redis_is_a_clear_error(stack: Stack) -> None:
    env = {**stack.env, "IMAGEGEN_REDIS_URL": "redis://127.0.0.1:9/0"}
    done = subprocess.run(
        [sys.executable, "-m", "producer.cli", "status", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 5
    assert "redis://127.0.0.1:9/0" in done.stderr
