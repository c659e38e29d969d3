"""``make demo`` works with a busy Redis port, and twice in a row; ``make dev`` serves until it
is stopped, by Ctrl-C or SIGTERM, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from PIL import Image

from devstack.processes import redis_server_binary
from tests.conftest import require_service
from tests.integration.conftest import BASE_REDIS
from tests.support import MARK_VARIABLE, kill_marked, marked_processes

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
    check_the_docs_show_this_output(stdout)


GETTING_STARTED = ROOT / "docs" / "getting-started.md"
SHOWN = re.compile(r"<!-- demo-output:begin -->\n```text\n(.*?)```\n<!-- demo-output:end -->", re.S)
RESULT_ROW = re.compile(r"^(\S.*?)\s{2,}[0-9A-Z]{26}\s+([a-z_]+)\s+\d+\s+(\S+)\s", re.M)
WEBHOOK_ROW = re.compile(r"^(\S.*?)\s{2,}((?:job|chain)\.[a-z_]+)\s+msg_\S+\s+(\w+)$", re.M)


def check_the_docs_show_this_output(stdout: str) -> None:
    """The output docs/getting-started.md shows is the demo's: the same examples, with the same
    statuses and sizes, and the same webhooks (ids, seeds and timings differ from run to run)."""
    shown = SHOWN.search(GETTING_STARTED.read_text())
    assert shown, "docs/getting-started.md shows no demo output between its markers"
    for row in (RESULT_ROW, WEBHOOK_ROW):
        printed = sorted(row.findall(stdout))
        assert printed, row.pattern
        assert sorted(row.findall(shown[1])) == printed


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


# `make dev`'s own database (the unit tests flush theirs between tests).
DEV_STACK_DB = 5


@contextlib.contextmanager
def sigint_disposition(handler: Any) -> Iterator[None]:
    """SIGINT as a child started meanwhile finds it: ignored stays ignored across exec (what a
    background job of a shell gets), a handler becomes the default (a terminal's foreground)."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def sigint_ignored(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^SigIgn:\s*([0-9a-f]+)$", status, re.MULTILINE)
    assert found, status
    return bool(int(found[1], 16) & (1 << (signal.SIGINT - 1)))


@pytest.mark.parametrize(
    ("sigint", "stop_with"),
    [
        pytest.param(signal.default_int_handler, signal.SIGINT, id="ctrl-c in a terminal"),
        pytest.param(signal.SIG_IGN, signal.SIGTERM, id="sigterm with sigint ignored"),
    ],
)
def test_make_dev_serves_the_stack_until_stopped_and_then_stops_everything(
    real_redis_url: str, sigint: Any, stop_with: int
) -> None:
    url = f"{BASE_REDIS}/{DEV_STACK_DB}"
    mark = secrets.token_hex(8)
    env = {**os.environ, "IMAGEGEN_REDIS_URL": url, MARK_VARIABLE: mark}
    with sigint_disposition(sigint):
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
        _check_dev(dev, url)
        # It runs with SIGINT as its shell gave it: ignored in a background job.
        assert sigint_ignored(dev.pid) == (sigint is signal.SIG_IGN)
        dev.send_signal(stop_with)
        assert dev.wait(timeout=60) == 0
        assert "Stopping" in dev.stdout.read()
        assert marked_processes(mark) == [], "a process of the stack outlived make dev"
    finally:
        # Whatever happened, nothing of this stack is left to take other tests' jobs.
        if dev.poll() is None:
            dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dev.kill()
        kill_marked(mark)
        dev.stdout.close()


def _check_dev(dev: subprocess.Popen[str], redis_url: str) -> None:
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
    assert f"IMAGEGEN_REDIS_URL={redis_url}" in pasted.splitlines()
    assert re.search(r"Flower login: admin:\S{12,}", text)
    with urllib.request.urlopen(api[1] + "/healthz", timeout=5) as response:
        assert response.status == 200
    # The console's address and a working operator token.
    token = re.search(r"the operator token (\S+)\)", text)
    assert f"console  {api[1]}/console" in text
    assert token, text
    with httpx.Client(base_url=api[1], timeout=5) as browser:
        form = re.search(r'name="csrf" value="([^"]+)"', browser.get("/console/login").text)
        assert form, "the login form carries no token"
        answer = browser.post("/console/login", data={"key": token[1], "csrf": form[1]})
    assert (answer.status_code, answer.headers.get("location")) == (303, "/console/operator")
