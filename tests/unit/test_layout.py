"""The rule of direction: producer never imports worker; the emulator imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("producer", {"worker", "devstack", "emulator"}),
        ("emulator", {"producer", "worker", "devstack"}),
        ("worker", {"devstack", "emulator"}),
    ],
)
def test_imports_follow_the_rule_of_direction(package: str, forbidden: set[str]) -> None:
    assert imported_packages(package) & forbidden == set()


def test_every_package_is_typed() -> None:
    for package in ("producer", "worker", "emulator", "devstack"):
        assert (ROOT / package / "py.typed").exists()
