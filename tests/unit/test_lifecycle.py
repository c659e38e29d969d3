"""The declared lifecycle is the one the scripts follow and docs/lifecycle.md shows."""

from __future__ import annotations

import re
from pathlib import Path

from imagegen.lifecycle import EFFECTS, PLACES, TRANSITIONS, Event, Place, lifecycle_markdown
from imagegen.redis.scripts import LIBRARY_DIR, SCRIPTS_DIR

ROOT = Path(__file__).resolve().parents[2]
LUA = "\n".join(path.read_text() for path in sorted(SCRIPTS_DIR.rglob("*.lua")))
LIFECYCLE_LUA = (LIBRARY_DIR / "lifecycle.lua").read_text()


def test_the_docs_show_the_declared_table() -> None:
    page = (ROOT / "docs" / "lifecycle.md").read_text()
    shown = re.search(r"<!-- lifecycle:begin -->\n(.*?)<!-- lifecycle:end -->", page, re.S)
    assert shown, "docs/lifecycle.md has no lifecycle tables between their markers"
    assert shown[1] == lifecycle_markdown()


def test_every_effect_and_place_has_its_lua_and_nothing_else_does() -> None:
    declared_effects = {effect for t in TRANSITIONS for effect in t.effects}
    assert declared_effects == set(EFFECTS)
    implemented = set(re.findall(r"^EFFECTS\.([a-z_]+) = function", LIFECYCLE_LUA, re.M))
    assert implemented == declared_effects
    places = set(re.findall(r"^PLACES\.([a-z_]+) = \{", LIFECYCLE_LUA, re.M))
    assert places == {p.value for p in Place}
    assert set(PLACES) == set(Place) - {Place.NEW}


def test_every_move_a_script_asks_for_is_declared() -> None:
    asked = set(re.findall(r"transition\([a-z_]+, '([a-z_]+)'", LUA))
    assert asked, "no transition found in the scripts"
    assert asked <= {e.value for e in Event}
    # Every declared event is used by some script.
    assert {e.value for e in Event} <= asked


def test_only_transition_writes_a_place_or_a_status() -> None:
    """No script writes a job's place or status but through ``transition`` (a record being
    created starts queued, in no place, until its first transition)."""
    write = re.compile(r"(HSET'[^)]*|set_fields\(job, \{[^}]*)'(place|status)'")
    for path in SCRIPTS_DIR.rglob("*.lua"):
        if path.name == "lifecycle.lua":
            continue
        found = [line.strip() for line in path.read_text().splitlines() if write.search(line)]
        assert found == [], path.name
    assert "set_fields(job, {'place', to, 'status', status})" in LIFECYCLE_LUA
