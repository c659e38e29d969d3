"""A short failover run: 80 jobs submitted over 12 s through a real
primary, two replicas and three Sentinels while the primary is SIGKILLed and a replica is
promoted. The same audit as ``make chaos``; the full runs (1,000 jobs, a SIGKILL and a
partition) are ``make chaos-failover``. No worker may exit on its own: a broker reconnect
through the Sentinels once ended the image workers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from devstack.chaos import FAILOVER_PLANS, run_failover_chaos
from devstack.processes import redis_server_binary
from devstack.sentinel import redis_sentinel_binary
from tests.conftest import require_service

pytestmark = pytest.mark.integration

SHORT_RUN = replace(
    FAILOVER_PLANS["kill"],
    jobs=80,
    image_workers=2,
    quota_rpm=1200.0,
    redis_down_at_s=6.0,
    receiver_down_at_s=2.0,
    receiver_down_s=5.0,
    submit_over_s=12.0,
    deadline_s=150.0,
)


@pytest.mark.timeout(240)
def test_a_short_failover_run_loses_nothing(tmp_path: Path) -> None:
    if redis_server_binary() is None or redis_sentinel_binary() is None:
        require_service("redis-server and redis-sentinel (the run starts its own cluster)")
    report = run_failover_chaos({"kill": SHORT_RUN}, tmp_path / "out", tmp_path / "run")
    run = report["runs"]["kill"]
    assert run["jobs"] == SHORT_RUN.jobs, run  # every submit was accepted in the end
    assert run["promoted_after_s"] is not None, run
    assert (run["never_final"], run["vanished"]) == (0, 0), run
    assert (run["s3_duplicates"], run["s3_orphans"]) == (0, 0), run
    assert run["succeeded_without_object"] == 0, run
    assert run["webhooks_lost"] == 0, run
    assert run["paid_twice"] <= run["calls_cut_by_failover"], run
    billed, counted = run["bedrock_billed_images"], run["spend_counter_images"]
    assert billed <= counted <= billed + run["booked_as_lost_calls"], run
    assert run["workers_down_at_end"] == [], run
    assert run["jobs_flow_again_after_s"] is not None, run
    assert report["goals_met"], run["goals"]
    assert (tmp_path / "out" / "chaos-failover.json").exists()
