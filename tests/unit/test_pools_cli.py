"""``imagegen tenants set --pools`` and ``imagegen spend --pools`` on a real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from imagegen.settings import get_settings
from imagegen.store.pool_stats import PoolStats
from producer.cli import main

CORE = "stability.stable-image-core-v1:1"
POOLS = [
    {"name": "acct-a", "region": "us-west-2", "models": [CORE], "rpm": 600, "profile": "a"},
    {"name": "acct-b", "region": "us-east-1", "models": [CORE], "rpm": 600, "price_usd": 0.05},
]


@pytest.fixture
def shell(real_redis: Any, real_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("IMAGEGEN_REDIS_URL", real_redis_url)
    monkeypatch.setenv("IMAGEGEN_POOLS", json.dumps(POOLS))
    get_settings.cache_clear()
    yield real_redis
    get_settings.cache_clear()


def test_a_tenants_pools_are_set_shown_and_checked(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tenants", "set", "eu-bank", "--pools", "acct-a"]) == 0
    assert "pools acct-a" in capsys.readouterr().out
    assert main(["tenants", "set", "eu-bank", "--pools", "acct-z"]) != 0
    assert "pools: no pool named acct-z (pools: acct-a, acct-b, default)" in capsys.readouterr().err
    assert main(["tenants", "show", "eu-bank", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pools"] == ["acct-a"]
    assert main(["tenants", "set", "eu-bank", "--pools", ""]) == 0
    assert "pools any" in capsys.readouterr().out


def test_spend_per_pool_shows_each_accounts_calls_images_spend_throttles_and_errors(
    shell: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = PoolStats(shell)
    for _ in range(3):
        stats.count("acct-a", CORE, "image", billed_micro=40_000)
    stats.count("acct-a", CORE, "ThrottlingException")
    stats.count("acct-b", CORE, "image", billed_micro=50_000)
    stats.count("acct-b", CORE, "AccessDeniedException")
    assert main(["spend", "--pools", "--json"]) == 0
    found = {d["pool"]: d for d in json.loads(capsys.readouterr().out)}
    a, b = found["acct-a"], found["acct-b"]
    assert (a["calls"], a["images"], a["spent_usd"], a["throttles"]) == (4, 3, 0.12, 1)
    assert (b["calls"], b["images"], b["errors"]) == (2, 1, 1)
    assert b["errors_by_code"] == {"AccessDeniedException": 1}
    assert main(["spend", "--pools"]) == 0
    table = capsys.readouterr().out
    assert "acct-a" in table
    assert "AccessDeniedException 1" in table
