"""``make demo`` works with a busy Redis port, and twice in a row."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devstack.processes import redis_server_binary
from tests.conftest import require_service

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_demo(out: Path, redis_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGEGEN_REDIS_URL": redis_url}
    return subprocess.run(
        [sys.executable, "-m", "devstack", "demo", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def check_outputs(out: Path, stdout: str) -> None:
    records = json.loads((out / "results.json").read_text())
    # The five documentation jobs, then the chain's three steps.
    assert [r["status"] for r in records] == ["succeeded"] * 4 + ["filtered"] + ["succeeded"] * 3
    core, cutout, upscaled = records[5:]
    assert cutout["request"]["image"] == f"job:{core['job_id']}"
    assert upscaled["request"]["image"] == f"job:{cutout['job_id']}"
    assert (upscaled["width"], upscaled["height"]) == (4 * core["width"], 4 * core["height"])
    for record in records[:4] + records[5:]:
        extension = record["s3_key"].rsplit(".", 1)[-1]
        with Image.open(out / f"{record['job_id']}.{extension}") as image:
            assert image.size == (record["width"], record["height"])
        assert record["job_id"] in stdout
    assert "Everything stopped" in stdout
    with Image.open(out / f"{cutout['job_id']}.png") as image:
        assert image.mode == "RGBA"  # the background removed
    webhooks = json.loads((out / "webhooks.json").read_text())
    jobs = [w["event"]["data"]["job_id"] for w in webhooks if w["event"]["type"].startswith("job.")]
    assert sorted(jobs) == sorted(r["job_id"] for r in records)
    [chain] = [w["event"] for w in webhooks if w["event"]["type"].startswith("chain.")]
    assert chain["type"] == "chain.succeeded"
    assert [step["job_id"] for step in chain["data"]["steps"]] == [r["job_id"] for r in records[5:]]
    assert all(w["verified"] for w in webhooks)


def test_demo_starts_a_private_redis_when_the_port_is_busy(tmp_path: Path) -> None:
    if redis_server_binary() is None:
        require_service("redis-server binary")
    with socket.socket() as busy:  # something that is not Redis holds the port
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_demo(tmp_path / "out", f"redis://127.0.0.1:{port}/0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"redis redis://127.0.0.1:{port}/" not in done.stdout
    check_outputs(tmp_path / "out", done.stdout)


def test_demo_runs_twice_in_a_row(tmp_path: Path, real_redis_url: str) -> None:
    for run in range(2):
        done = run_demo(tmp_path / f"out{run}", real_redis_url)
        assert done.returncode == 0, done.stdout + done.stderr
        check_outputs(tmp_path / f"out{run}", done.stdout)


def test_make_dev_serves_the_stack_until_ctrl_c_and_then_stops_everything(
    real_redis_url: str,
) -> None:
    import signal

    env = {**os.environ, "IMAGEGEN_REDIS_URL": real_redis_url}
    dev = subprocess.Popen(
        [sys.executable, "-m", "devstack", "dev"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert dev.stdout is not None
    try:
        _check_dev(dev, real_redis_url)
    finally:
        if dev.poll() is None:  # a failed check must not leave the stack running
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dev.kill()
        dev.stdout.close()


def _check_dev(dev: subprocess.Popen[str], real_redis_url: str) -> None:
    import http.client
    import re
    import signal
    import time
    import urllib.request

    assert dev.stdout is not None
    banner = []
    deadline = time.monotonic() + 90
    for line in dev.stdout:
        banner.append(line)
        if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
            break
    text = "".join(banner)
    api = re.search(r"api\s+(http://\S+)", text)
    flower = re.search(r"flower\s+(http://\S+)", text)
    assert api, text
    assert flower, text
    assert "export IMAGEGEN_REDIS_URL=" in text
    assert f"docs     {api[1]}/docs" in text
    assert f"metrics  {api[1]}/metrics" in text
    # The export lines work when pasted into a shell.
    exports = [line.strip() for line in banner if line.strip().startswith("export ")]
    pasted = subprocess.run(
        ["bash", "-c", "\n".join([*exports, "env"])],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    assert f"IMAGEGEN_REDIS_URL={real_redis_url}" in pasted.splitlines()
    assert re.search(r"Flower login: admin:\S{12,}", text)
    with urllib.request.urlopen(api[1] + "/healthz", timeout=5) as response:
        assert response.status == 200
    # The console's address and a working operator token.
    token = re.search(r"the operator token (\S+)\)", text)
    assert f"console  {api[1]}/console" in text
    assert token, text
    connection = http.client.HTTPConnection(api[1].removeprefix("http://"), timeout=5)
    connection.request(
        "POST",
        "/console/login",
        body=f"key={token[1]}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    answer = connection.getresponse()
    assert (answer.status, answer.getheader("Location")) == (303, "/console/operator")
    connection.close()
    dev.send_signal(signal.SIGINT)
    assert dev.wait(timeout=60) == 0
    rest = dev.stdout.read()
    assert "Stopping" in rest
    api_port = api[1].rsplit(":", 1)[1]
    left = subprocess.run(
        ["pgrep", "-f", f"uvicorn .*--port {api_port} "],
        capture_output=True,
        text=True,
        check=False,
    )
    assert left.stdout.strip() == "", "the API process outlived make dev"
