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
    assert [r["status"] for r in records] == ["succeeded"] * 4 + ["filtered"]
    for record in records[:4]:
        extension = record["s3_key"].rsplit(".", 1)[-1]
        with Image.open(out / f"{record['job_id']}.{extension}") as image:
            assert image.size == (record["width"], record["height"])
        assert record["job_id"] in stdout
    assert "Everything stopped" in stdout
    webhooks = json.loads((out / "webhooks.json").read_text())
    assert sorted(w["event"]["data"]["job_id"] for w in webhooks) == sorted(
        r["job_id"] for r in records
    )
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
