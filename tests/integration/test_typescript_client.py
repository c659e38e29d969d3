"""The TypeScript package (clients/typescript) against a real stack: ``npm ci`` then ``npm test``
with the API's URL and a key in the environment; its tests submit, wait, fetch the image by its
URL and verify a webhook they received (a stack that lets webhooks reach 127.0.0.1).

Node 20.3+ and npm are required: missing, the test is skipped locally and fails under CI.
``npm ci`` keeps its cache in clients/typescript/.npm-cache and prefers it, so a machine that
installed once runs this offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import Stack
from producer.operator import OperatorClient
from tests.conftest import require_service
from tests.integration.conftest import FAST_RETRIES, start_stack

pytestmark = pytest.mark.integration

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "typescript"
TYPESCRIPT_STACK_DB = 6
MIN_NODE = (20, 3)
WEBHOOKS_TO_LOCALHOST = {
    **FAST_RETRIES,
    "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
}


def node_tools() -> str:
    """npm's path, once node is new enough."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        require_service("node and npm are not installed (apt-get install nodejs npm)")
    assert node is not None
    assert npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    found = tuple(int(part) for part in re.findall(r"\d+", version.stdout)[:2])
    if found < MIN_NODE:
        require_service(f"node {version.stdout.strip()} is older than 20.3")
    return npm


@pytest.fixture(scope="module")
def typescript_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("typescript"),
        TYPESCRIPT_STACK_DB,
        worker_concurrency=4,
        extra_env=WEBHOOKS_TO_LOCALHOST,
    )
    running.start_api()
    yield running
    running.stop()


def npm(
    npm_path: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [npm_path, *args],
        cwd=PACKAGE,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.timeout(600)
def test_the_typescript_package_passes_its_tests_against_the_stack(
    typescript_stack: Stack,
) -> None:
    npm_path = node_tools()
    installed = npm(
        npm_path, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--cache", ".npm-cache"
    )
    if installed.returncode != 0:
        require_service(f"npm ci failed (offline without a cache?):\n{installed.stderr[-2000:]}")
    with OperatorClient(typescript_stack.settings()) as operator:
        _, key = operator.api_keys.create("typescript")
    done = npm(
        npm_path,
        "test",
        env={"IMAGEGEN_API_URL": typescript_stack.urls["api"], "IMAGEGEN_API_KEY": key},
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:]
    # Every test ran: none skipped for want of the stack, none failed.
    assert re.search(r"^\S+ skipped 0$", report, re.MULTILINE), report[-3000:]
    assert re.search(r"^\S+ fail 0$", report, re.MULTILINE), report[-3000:]
    assert "submits, waits, and fetches the image by its URL" in report
    assert "verifies the signature of the webhook it received" in report
