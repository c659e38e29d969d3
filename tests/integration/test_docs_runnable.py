"""Every shell block the README and docs/ title "runnable" (```` ```sh title="runnable" ````)
runs as written against a
local stack, in a shell with ``make dev``'s export lines: the blocks name ``make dev``'s API
address (127.0.0.1:8000 or localhost:8000), which stands for this stack's API here. The blocks of
one page run in order in one directory (a later block may use a file an earlier one saved), and
every image a block saves (``-o``/``--output``) must be a real image. The blocks run on a stack
of their own, as they change tenants' caps and budgets and replay dead letters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
from PIL import Image

from devstack.stack import Stack
from producer.client import Client
from tests.conftest import require_service
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUNNABLE = re.compile(r'^```(sh|bash|python) title="runnable"\n(.*?)^```', re.M | re.S)
DEV_API = re.compile(r"(?:http://)?(?:127\.0\.0\.1|localhost):8000")
SAVED_IMAGE = re.compile(
    r"""(?:(?<![\w-])(?:-o|--output)\s+|download\([^,]+,\s*)"?([\w./-]+\.(?:png|jpg|jpeg|webp))"""
)
DOCS_STACK_DB = 8


class DocBlock(NamedTuple):
    page: Path
    index: int
    language: str
    code: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}#{self.index}"


def runnable_blocks() -> list[DocBlock]:
    return [
        DocBlock(page, index, language, code)
        for page in PAGES
        for index, (language, code) in enumerate(RUNNABLE.findall(page.read_text()))
    ]


BLOCKS = runnable_blocks()


def test_the_docs_mark_their_runnable_blocks() -> None:
    pages = {block.page.relative_to(ROOT).as_posix() for block in BLOCKS}
    assert {"README.md", "docs/submitting/http.md", "docs/models.md"} <= pages
    assert len(BLOCKS) >= 8
    assert {block.language for block in BLOCKS} == {"sh", "python"}


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("docs-stack"), DOCS_STACK_DB)
    yield running
    running.stop()


@dataclass(frozen=True)
class DocsShell:
    """What a block's shell gets: make dev's export lines, and the API standing for make dev's."""

    exports: dict[str, str]
    api_url: str
    api_key: str  # IMAGEGEN_API_KEY, which the Python blocks read


@pytest.fixture(scope="module")
def docs_shell(docs_stack: Stack) -> DocsShell:
    for tool in ("bash", "curl", "redis-cli"):
        if shutil.which(tool) is None:
            require_service(f"{tool}, which the docs' shell blocks use")
    with Client(docs_stack.settings()) as client:
        _, key = client.api_keys.create("acme")
    return DocsShell(docs_stack.exports(), docs_stack.start_api(), key)


@pytest.fixture(scope="module")
def page_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    return {page: tmp_path_factory.mktemp(page.stem) for page in PAGES}


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_the_block_runs_as_written(
    block: DocBlock, docs_shell: DocsShell, page_dirs: dict[Path, Path]
) -> None:
    workdir = page_dirs[block.page]
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(workdir),
        **docs_shell.exports,
    }
    code = DEV_API.sub(docs_shell.api_url, block.code)
    if block.language == "python":
        command = [sys.executable, "-c", code]
        env["IMAGEGEN_API_KEY"] = docs_shell.api_key
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", code]
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 0, f"{block}:\n{block.code}\n{done.stderr}"
    for name in SAVED_IMAGE.findall(block.code):
        with Image.open(workdir / name) as image:
            image.verify()
