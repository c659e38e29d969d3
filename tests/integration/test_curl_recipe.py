"""The curl recipe of docs/submitting/http.md, run as written against the local stack: with
the export lines a shell gets from ``make dev`` (and ``IMAGEGEN_API_URL`` naming this stack's
API), it creates a key, submits, waits and downloads the image."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devstack.stack import Stack

pytestmark = pytest.mark.integration

PAGE = Path(__file__).resolve().parents[2] / "docs" / "submitting" / "http.md"
RECIPE = re.compile(
    r"<!-- curl-recipe:begin -->\n```sh[^\n]*\n(.*?)```\n<!-- curl-recipe:end -->", re.DOTALL
)


def test_the_docs_curl_recipe_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    found = RECIPE.search(PAGE.read_text())
    assert found, "docs/submitting/http.md has no curl recipe between its markers"
    api_url = stack.urls.get("api") or stack.start_api()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        **stack.exports(),
        "IMAGEGEN_API_URL": api_url,
    }
    done = subprocess.run(
        ["bash", "-e", "-c", found[1]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '"status":"succeeded"'
    with Image.open(tmp_path / "lighthouse.png") as image:
        assert (image.format, image.size) == ("PNG", (1344, 768))
