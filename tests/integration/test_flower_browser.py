"""Flower in a real headless Chromium: behind a password, the worker online, the tasks listed
with their job ids and short results, and never a prompt."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis

from devstack.stack import Stack
from imagegen.messages import GENERATE_TASK, task_message
from producer.client import Client
from tests.conftest import require_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=8000",
]
SECRET_PROMPT = "a prompt that must never reach the dashboard 7f3a9c"


def chromium(tmp_path: Path, *args: str) -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        require_service("Debian's chromium (apt-get install chromium)")
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    done = subprocess.run(
        [str(binary), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return done.stdout


def flower_api(request: urllib.request.Request) -> dict[str, object]:
    """A Flower API answer (workers or tasks, by id)."""
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)  # type: ignore[no-any-return]


def test_flower_shows_the_fleet_and_never_a_prompt(stack: Stack, tmp_path: Path) -> None:
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        require_service("Debian's chromium (apt-get install chromium)")
    url = stack.urls.get("flower") or stack.start_flower()
    assert stack.flower_auth is not None
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "/workers", timeout=5)
    assert refused.value.code == 401
    refused.value.close()

    basic = base64.b64encode(stack.flower_auth.encode()).decode()
    ask = urllib.request.Request(
        url + "/api/workers?refresh=1", headers={"Authorization": f"Basic {basic}"}
    )
    deadline = time.monotonic() + 30
    while not flower_api(ask):
        assert time.monotonic() < deadline, "Flower never saw the worker"
        time.sleep(0.3)
    # Flower's event stream is connected once it lists a task: what follows is seen from the
    # start.
    tasks = urllib.request.Request(url + "/api/tasks", headers={"Authorization": f"Basic {basic}"})
    with Client(stack.settings()) as client:
        warm_up = client.submit("a warm-up picture")
        deadline = time.monotonic() + 30
        while warm_up.job_id not in flower_api(tasks):
            assert time.monotonic() < deadline, "Flower never listed a task"
            time.sleep(0.3)

    # A raw job built the usual Celery way carries its prompt in the message: the gate must
    # keep it from Flower too.
    raw_prompt = f"{SECRET_PROMPT} raw"
    redis.Redis.from_url(stack.env["IMAGEGEN_REDIS_URL"]).lpush(
        "interactive",
        task_message(
            GENERATE_TASK,
            "RAW-FLOWER",
            ["RAW-FLOWER"],
            "interactive",
            kwargs={"job": {"request": {"prompt": raw_prompt}}},
        ),
    )
    with Client(stack.settings()) as client:
        jobs = client.submit_many(
            [client.spec(SECRET_PROMPT), client.spec("a fox"), client.spec("a heron")]
        )
        done = [client.wait(job.job_id, timeout_s=30) for job in jobs]
        assert client.wait("RAW-FLOWER", timeout_s=30).status.value == "succeeded"

    user, password = stack.flower_auth.split(":", 1)
    authed = url.replace("http://", f"http://{user}:{password}@")
    workers_page = chromium(tmp_path, "--dump-dom", authed + "/workers")
    assert "worker@" in workers_page
    assert "Online" in workers_page

    tasks_page = chromium(tmp_path, "--dump-dom", authed + "/tasks")
    assert "imagegen.generate" in tasks_page
    for record in done:
        assert record.job_id in tasks_page

    detail = chromium(tmp_path, "--dump-dom", f"{authed}/task/{done[0].job_id}")
    assert done[0].job_id in detail
    assert str(done[0].s3_key) in detail  # the short result: status, S3 key, seed
    assert SECRET_PROMPT not in detail
    assert SECRET_PROMPT not in tasks_page
    assert "RAW-FLOWER" in tasks_page
    raw_detail = chromium(tmp_path, "--dump-dom", f"{authed}/task/RAW-FLOWER")
    assert "RAW-FLOWER" in raw_detail
    assert SECRET_PROMPT not in raw_detail

    screenshot = ROOT / "out" / "flower-tasks.png"
    screenshot.parent.mkdir(exist_ok=True)
    chromium(tmp_path, "--window-size=1400,900", f"--screenshot={screenshot}", authed + "/tasks")
    assert screenshot.stat().st_size > 10_000
