"""The suite's own isolation: each test stack has a Redis database of its own.

A stack flushes its database when it starts. Two stacks on one database work only while they
never overlap, which test order decides: under ``make test`` (two workers, files in any order) a
second stack flushed a running one's API keys away. So the numbers must differ, and none may be
the unit tests' database (15) or the database a command falls back to (0).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_DB = re.compile(r"^(\w+_STACK_DB) = (\d+)$", re.M)
UNIT_TESTS_DB, DEFAULT_DB = 15, 0


def test_every_stack_has_a_database_of_its_own() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{name}": int(db)
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for name, db in STACK_DB.findall(path.read_text())
    }
    assert len(found) >= 10, found  # the pattern still finds the stacks
    shared = {db for db, count in Counter(found.values()).items() if count > 1}
    assert not shared, {where: db for where, db in found.items() if db in shared}
    assert not {UNIT_TESTS_DB, DEFAULT_DB} & set(found.values()), found
    assert all(0 < db < 16 for db in found.values()), found  # a default Redis has 16
