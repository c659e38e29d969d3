"""What ``make dev`` prints for another shell."""

from __future__ import annotations

import subprocess

from devstack.__main__ import export_lines


def test_export_lines_survive_a_shell_with_json_and_spaces() -> None:
    exports = {
        "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
        "IMAGEGEN_MODEL_LIMITS": '{"m": {"rpm": 30}}',
        "IMAGEGEN_FLOWER_BASIC_AUTH": "admin:it's $ecret & long",
    }
    script = "\n".join([*export_lines(exports), "env"])
    printed = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True, env={}
    ).stdout
    seen = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
    for name, value in exports.items():
        assert seen[name] == value
