"""``imagegen`` from a shell, against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devstack.stack import Stack

pytestmark = pytest.mark.integration


def imagegen(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env={**stack.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_submit_wait_json_prints_one_record_and_saves_the_image(
    stack: Stack, tmp_path: Path
) -> None:
    target = tmp_path / "coffee.jpg"
    done = imagegen(
        stack,
        "submit",
        "Cozy coffee shop interior with warm lighting",
        "--aspect-ratio",
        "3:2",
        "--output-format",
        "jpeg",
        "--negative-prompt",
        "cluttered, dark, empty",
        "--seed",
        "7",
        "--wait",
        "--output",
        str(target),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # exactly one JSON document, nothing else
    assert record["status"] == "succeeded"
    assert record["seed"] == 7
    assert record["request"]["negative_prompt"] == "cluttered, dark, empty"
    with Image.open(target) as image:
        assert (image.format, image.size) == ("JPEG", (1216, 832))

    status = imagegen(stack, "status", record["job_id"], "--json")
    assert json.loads(status.stdout) == record
    human = imagegen(stack, "status", record["job_id"])
    assert record["job_id"] in human.stdout
    assert "succeeded" in human.stdout
    assert "cost=$0.04" in human.stdout  # one Core image


def test_submit_without_wait_returns_a_queued_job_that_wait_follows(stack: Stack) -> None:
    queued = json.loads(imagegen(stack, "submit", "a windmill", "--json").stdout)
    assert queued["status"] == "queued"
    waited = imagegen(stack, "wait", queued["job_id"], "--json")
    assert waited.returncode == 0
    assert json.loads(waited.stdout)["status"] == "succeeded"


def test_bad_input_names_the_field_and_exits_2(stack: Stack) -> None:
    done = imagegen(stack, "submit", "a", "--seed", "-5", "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "request.seed" in done.stderr


def test_a_filtered_job_exits_1(stack: Stack) -> None:
    done = imagegen(stack, "submit", "forbidden fruit", "--wait")
    assert done.returncode == 1
    assert "filtered" in done.stdout


def test_unknown_job_exits_4(stack: Stack) -> None:
    done = imagegen(stack, "status", "01NOSUCHJOB")
    assert done.returncode == 4
    assert "not found" in done.stderr


def test_unreachable_redis_is_a_clear_error(stack: Stack) -> None:
    done = imagegen(stack, "status", "x", env={"IMAGEGEN_REDIS_URL": "redis://127.0.0.1:9/0"})
    assert done.returncode == 5
    assert "redis://127.0.0.1:9/0" in done.stderr


def test_quota_shows_the_shared_rate_and_each_tenants_share(stack: Stack) -> None:
    core_model = "stability.stable-image-core-v1:0"
    assert imagegen(stack, "submit", "a quota check", "--tenant", "acme", "--wait").returncode == 0
    done = imagegen(stack, "quota", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    core = next(q for q in found["quotas"] if q["model_id"] == core_model)
    assert core["configured_rpm"] == 6000
    assert core["effective_rpm"] == 6000
    assert core["calls_last_minute"] >= 1
    acme = next(t for t in found["tenants"] if t["tenant"] == "acme")
    assert (acme["model_id"], acme["released_last_minute"]) == (core_model, 1)
    table = imagegen(stack, "quota")
    assert core_model in table.stdout
    assert "effective/min" in table.stdout
    assert "fair share" in table.stdout


def test_a_tenants_weight_and_caps_are_set_and_shown(stack: Stack) -> None:
    done = imagegen(stack, "tenants", "set", "acme", "--weight", "3", "--max-concurrency", "4")
    assert done.returncode == 0, done.stderr
    shown = json.loads(imagegen(stack, "tenants", "show", "acme", "--json").stdout)
    assert (shown["weight"], shown["max_concurrency"], shown["rate_rpm"]) == (3.0, 4, 0.0)
    bad = imagegen(stack, "tenants", "set", "acme", "--weight", "0")
    assert bad.returncode != 0
    assert "weight" in bad.stderr


def test_a_failed_job_is_listed_in_the_dlq_and_replayed(stack: Stack) -> None:
    unknown_model = "stability.stable-diffusion-xl-v1"  # allowed here, unknown to the emulator
    env_models = json.dumps(["stability.stable-image-core-v1:0", unknown_model])
    failed = imagegen(
        stack,
        "submit",
        "a doomed job",
        "--model-id",
        unknown_model,
        "--wait",
        "--json",
        env={"IMAGEGEN_ALLOWED_MODEL_IDS": env_models},
    )
    assert failed.returncode == 1
    record = json.loads(failed.stdout)
    assert (record["status"], record["error_code"]) == ("failed", "ResourceNotFoundException")

    listed = json.loads(imagegen(stack, "dlq", "list", "--json").stdout)
    assert record["job_id"] in [r["job_id"] for r in listed]

    replayed = imagegen(stack, "dlq", "replay", record["job_id"])
    assert replayed.returncode == 0
    assert replayed.stdout.split() == [record["job_id"]]
    again = json.loads(imagegen(stack, "wait", record["job_id"], "--json").stdout)
    assert (again["status"], again["replays"]) == ("failed", 1)

    nothing = imagegen(stack, "dlq", "replay", "01NOTFAILED")
    assert nothing.returncode == 4
    assert "not a failed job" in nothing.stderr


def test_budgets_and_spend_from_the_shell(stack: Stack) -> None:
    tenant = "spender"
    done = imagegen(stack, "budgets", "set", tenant, "--daily-hard", "0.04", "--on-exceed", "fail")
    assert done.returncode == 0, done.stderr
    assert "daily hard $0.04" in done.stdout
    bought = imagegen(stack, "submit", "first", "--tenant", tenant, "--wait", "--json")
    assert json.loads(bought.stdout)["cost_usd"] == 0.04
    refused = imagegen(stack, "submit", "second", "--tenant", tenant, "--wait", "--json")
    assert refused.returncode == 1  # ended without an image
    assert json.loads(refused.stdout)["status"] == "budget_exceeded"
    lines = imagegen(stack, "spend", "--tenant", tenant, "--csv").stdout.splitlines()
    assert lines[0] == "tenant,day,model_id,images,spend_usd,cache_hits,saved_usd"
    assert lines[1].startswith(f"{tenant},")
    assert lines[1].endswith(",1,0.040000,0,0.000000")
    shown = json.loads(imagegen(stack, "budgets", "show", tenant, "--json").stdout)
    assert (shown["today"]["spent_usd"], shown["today"]["reserved_usd"]) == (0.04, 0)
    assert shown["budget"]["on_exceed"] == "fail"
    bad = imagegen(stack, "budgets", "set", tenant, "--daily-hard", "-3")
    assert bad.returncode == 2


def test_doctor_passes_on_the_local_stack_and_models_lists_every_model(stack: Stack) -> None:
    done = imagegen(stack, "doctor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses["s3 images"] == statuses["redis"] == "ok"
    assert statuses["model us.stability.stable-image-remove-background-v1:0"] == "ok"
    models = json.loads(imagegen(stack, "models", "--json").stdout)["models"]
    assert len(models) == 18
    [upscale] = [m for m in models if m["model_id"] == "us.stability.stable-fast-upscale-v1:0"]
    assert (upscale["price_usd"], upscale["input_images"]) == (0.03, ["image"])


def test_doctor_fails_and_says_what_to_fix(stack: Stack) -> None:
    done = imagegen(stack, "doctor", env={"IMAGEGEN_S3_BUCKET": "no-such-bucket"})
    assert done.returncode == 1
    assert "does not exist" in done.stdout
    assert "To fix:" in done.stdout
    assert "IMAGEGEN_S3_BUCKET" in done.stdout
