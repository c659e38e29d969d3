"""A short chaos run on every ``make test``: 100 jobs while workers are SIGKILLed and restarted,
Redis is SIGKILLed once (and reloads its append-only file), Bedrock fails a quarter of its
calls retryably and the webhook receiver answers 503 for a while. Nothing may be lost; the full
run is ``make chaos``."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.chaos import ChaosPlan, run_chaos
from devstack.processes import redis_server_binary
from tests.conftest import require_service

SHORT_RUN = ChaosPlan(
    jobs=100,
    image_workers=2,
    kill_every_s=3.0,
    max_kills=5,
    quota_rpm=300.0,
    redis_down_at_s=8.0,
    redis_down_s=1.5,
    receiver_down_at_s=3.0,
    receiver_down_s=10.0,
    deadline_s=240.0,
)


@pytest.mark.timeout(400)
def test_a_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    if redis_server_binary() is None:
        require_service("a redis-server binary (the run kills and restarts its own Redis)")
    report = run_chaos(SHORT_RUN, tmp_path / "out", tmp_path / "run")
    assert report["kills"] >= 3
    assert report["redis_restarts"] == 1
    assert (report["never_final"], report["vanished"]) == (0, 0), report
    assert (report["s3_duplicates"], report["s3_orphans"]) == (0, 0), report
    assert report["succeeded_without_object"] == 0, report
    assert report["webhooks_lost"] == 0, report
    assert report["paid_twice"] <= report["calls_cut_by_kills"], report
    billed, counted = report["bedrock_billed_images"], report["spend_counter_images"]
    assert billed <= counted <= billed + report["booked_as_lost_calls"], report
    assert report["workers_down_at_end"] == [], report
    assert report["goals_met"]
