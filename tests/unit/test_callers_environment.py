"""The suite runs the same in a shell where ``make dev``'s export lines were pasted: the caller's
``IMAGEGEN_*`` settings are set aside, and the run's header says which."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What `make dev` prints for another shell (a stack that is not running any more).
PASTED = {
    "IMAGEGEN_REDIS_URL": "redis://127.0.0.1:1/3",
    "IMAGEGEN_BEDROCK_ENDPOINT_URL": "http://127.0.0.1:1",
    "IMAGEGEN_S3_ENDPOINT_URL": "http://127.0.0.1:1",
    "IMAGEGEN_S3_BUCKET": "another-stacks-bucket",
    "IMAGEGEN_RATE_LIMIT_RPM": "600",
    "IMAGEGEN_API_ADMIN_TOKEN": "a-token-of-the-other-stack-long-enough-to-pass",
    "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
}


def test_settings_tests_pass_with_make_devs_exports_in_the_environment() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/unit/test_settings.py"],
        cwd=ROOT,
        env={**os.environ, **PASTED},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The header says what was set aside (nothing is hidden from whoever reads the run).
    header = next(line for line in done.stdout.splitlines() if line.startswith("set aside"))
    assert all(name in header for name in PASTED)


def test_the_tests_own_redis_settings_are_kept() -> None:
    from tests.conftest import CALLERS_SETTINGS

    assert not [name for name in CALLERS_SETTINGS if name.startswith("IMAGEGEN_TEST_")]
    assert not [name for name in os.environ if name in CALLERS_SETTINGS]
