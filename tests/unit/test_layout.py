"""The rules of the layout: who may import whom, and who may know Redis.

``imagegen`` is the shared core; ``producer`` and ``worker`` build on it and never import each
other; ``emulator`` and ``imagegen_client`` (the HTTP API's client) import nothing of ours, and
``producer``'s CLI speaks the HTTP API through ``imagegen_client`` (``--api``).
Only the core knows a Redis key, a hash field or a line of Lua.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imagegen.records import DeliveryAttempt, JobRecord, WebhookDelivery
from imagegen.redis.scripts import SCRIPT_NAMES, SCRIPTS_DIR, function_name, library_source
from imagegen.store.dispatch import TenantLimits

ROOT = Path(__file__).resolve().parents[2]
OURS = {"imagegen", "imagegen_client", "producer", "worker", "emulator", "devstack", "tests"}
OUTSIDE_THE_CORE = ("producer", "worker", "devstack", "emulator")


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def string_constants(package: str) -> dict[str, set[str]]:
    """Every string literal of a package, by file."""
    found: dict[str, set[str]] = {}
    for path in sources(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.setdefault(str(path.relative_to(ROOT)), set()).add(node.value)
    return found


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("imagegen", {"imagegen"}),
        ("producer", {"imagegen", "producer", "imagegen_client"}),
        ("worker", {"imagegen", "worker"}),
        ("emulator", {"emulator"}),
        ("imagegen_client", {"imagegen_client"}),
        ("devstack", OURS - {"tests"}),
    ],
)
def test_imports_follow_the_rule_of_direction(package: str, allowed: set[str]) -> None:
    assert (imported_packages(package) & OURS) - allowed == set()


def test_every_package_is_typed() -> None:
    for package in ("imagegen", "imagegen_client", "producer", "worker", "emulator", "devstack"):
        assert (ROOT / package / "py.typed").exists()


def test_the_http_client_loads_nothing_of_the_service() -> None:
    """A backend with only an API key imports the client without Redis, S3, Celery or
    FastAPI (nor pydantic-settings, which would read IMAGEGEN_* into a service's settings)."""
    probe = "import sys, imagegen_client; print(sorted({m.split('.')[0] for m in sys.modules}))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(ast.literal_eval(done.stdout))
    service = {"imagegen", "producer", "redis", "boto3", "botocore", "celery", "kombu"}
    assert loaded & (service | {"fastapi", "starlette", "pydantic_settings", "PIL"}) == set()


def test_lua_lives_only_in_script_files_of_the_core() -> None:
    for package in OUTSIDE_THE_CORE:
        for path in sources(package):
            text = path.read_text()
            assert "redis.call(" not in text, path
            assert "register_script" not in text, path
    for path in sources("imagegen"):
        if path.name != "scripts.py":
            assert "register_script" not in path.read_text(), path
            assert "redis.call(" not in path.read_text(), path


# Library functions that touch keys beyond a script's KEYS.
_TOUCHING = re.compile(
    r"\b(transition|load_job|queue_add|queue_remove|queue_empty|pause|resume|resume_paused|"
    r"book_image|book_hit|add_delivery|budget_room|cache_lookup|estimate_start|jobs_ahead|"
    r"free_slot|tenant_tokens|tenant_weight|announce|unreserve)\(|\bK\.[A-Z_]+"
)


def test_every_script_file_names_its_keys_arguments_and_key_families() -> None:
    assert len(SCRIPT_NAMES) >= 15
    for name in SCRIPT_NAMES:
        text = (SCRIPTS_DIR / f"{name}.lua").read_text()
        header = re.match(r"(?:--[^\n]*\n)+", text)
        assert header, name
        assert "KEYS" in header[0], name
        assert "ARGV" in header[0], name
        body = text[header.end() :]
        if _TOUCHING.search(body):
            # A script that reaches keys outside its KEYS says which families (Redis Cluster
            # could not route it: docs/lifecycle.md says so).
            assert "Touches" in header[0] or "Reads:" in header[0], name
    source = library_source()
    assert "local LIFECYCLE" in source
    for name in SCRIPT_NAMES:
        assert f"function_name = '{function_name(name)}'" in source, name


def hash_only_field_names() -> set[str]:
    """Field names the scripts write that are no attribute of a public record: only the core
    may spell them."""
    lua = "\n".join(path.read_text() for path in SCRIPTS_DIR.rglob("*.lua"))
    quoted = set(re.findall(r"'([a-z]+(?:_[a-z]+)+)'", lua))
    public = {
        *JobRecord.model_fields,
        *WebhookDelivery.model_fields,
        *DeliveryAttempt.model_fields,
        *(field.name for field in dataclasses.fields(TenantLimits)),
    }
    return quoted - public


def test_no_hash_field_name_or_key_outside_the_core() -> None:
    fields = hash_only_field_names()
    assert {"lease_owner", "webhook_deliveries", "created_ms"} <= fields
    for package in OUTSIDE_THE_CORE:
        for path, constants in string_constants(package).items():
            assert constants & fields == set(), path
            assert not [c for c in constants if re.match(r"imagegen:[a-z]", c)], path
