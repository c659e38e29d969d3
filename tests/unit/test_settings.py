"""Settings: environment prefix, eager checks that name the setting, and the docs' table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from imagegen.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg,arg-type]


def test_defaults_run_locally_and_target_stable_image_core() -> None:
    settings = make()
    assert settings.model_id == "stability.stable-image-core-v1:0"
    assert settings.aws_region == "us-west-2"
    assert settings.bedrock_endpoint_url is None
    assert settings.worker_pool == "threads"


def test_environment_variables_use_the_imagegen_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEGEN_S3_BUCKET", "from-env")
    monkeypatch.setenv("IMAGEGEN_ALLOWED_MODEL_IDS", '["stability.stable-image-core-v1:0"]')
    settings = make()
    assert settings.s3_bucket == "from-env"
    assert settings.allowed_model_ids == ("stability.stable-image-core-v1:0",)


def test_a_hard_limit_shorter_than_one_call_is_refused() -> None:
    with pytest.raises(ValidationError, match="task_time_limit_s"):
        make(bedrock_read_timeout_s=400)


@pytest.mark.parametrize("auth", ["admin:short", "admin:change-me-to-a-long-password"])
def test_flower_refuses_weak_or_example_passwords(auth: str) -> None:
    with pytest.raises(ValidationError, match="flower_basic_auth"):
        make(flower_basic_auth=auth)
    assert make(flower_basic_auth="admin:a-long-random-password").flower_basic_auth


def test_the_default_model_must_be_allowed() -> None:
    with pytest.raises(ValidationError, match="allowed_model_ids"):
        make(model_id="amazon.titan-image-generator-v2:0")


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ValidationError) as caught:
        make(worker_pool="processes", max_attempts=0)
    fields = {error["loc"][0] for error in caught.value.errors()}
    assert fields == {"worker_pool", "max_attempts"}


def test_the_docs_document_every_setting_with_its_default() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    rows = dict(re.findall(r"^\| `IMAGEGEN_([A-Z0-9_]+)` \| ([^|]+) \|", page, re.MULTILINE))
    fields = Settings.model_fields
    assert set(rows) == {name.upper() for name in fields}
    defaults = make()
    for name in fields:
        value = getattr(defaults, name)
        documented = rows[name.upper()].strip()
        if value is None:
            assert documented == "(unset)", name
        elif not isinstance(value, tuple | dict):  # lists and maps are described in words
            assert documented == f"`{value}`", name


def test_logs_never_carry_a_prompt_or_a_secret() -> None:
    import json
    import logging

    from imagegen.logs import JsonFormatter, prompt_facts

    record = logging.makeLogRecord(
        {
            "msg": "job running",
            "levelname": "INFO",
            "job_id": "J1",
            **prompt_facts("a very private prompt"),
            "api_key": "igk_secret",
            "authorization": "Bearer x",
            "data": {"id": "J1", "kwargs": "{'job': {'request': {'prompt': 'a very private'}}}"},
        }
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["job_id"] == "J1"
    assert entry["prompt_chars"] == len("a very private prompt")
    assert "private" not in line
    assert "igk_secret" not in line
    assert "Bearer" not in line


def test_retention_must_outlive_the_webhook_schedule() -> None:
    with pytest.raises(ValidationError, match="must outlive the webhook retry schedule"):
        make(job_retention_s=3600, webhook_retry_schedule_s=[0, 5, 7200])


def test_worker_metrics_under_the_prefork_pool_are_refused() -> None:
    with pytest.raises(ValidationError, match="prefork"):
        make(worker_pool="prefork", worker_metrics_port=9100)
    assert make(worker_pool="prefork").worker_pool == "prefork"


def test_pools_that_are_not_installed_are_refused() -> None:
    for pool in ("gevent", "eventlet"):
        with pytest.raises(ValidationError, match="worker_pool"):
            make(worker_pool=pool)


def test_streams_and_waits_must_leave_redis_connections_for_everything_else() -> None:
    with pytest.raises(ValidationError, match="each stream and wait holds a Redis connection"):
        make(api_max_streams_total=40, api_max_waiting_total=40, redis_max_connections=64)


def test_an_admin_token_is_long_or_absent() -> None:
    with pytest.raises(ValueError, match="api_admin_token needs 24"):
        make(api_admin_token="")
    with pytest.raises(ValueError, match="api_admin_token needs 24"):
        make(api_admin_token="short")
    assert make(api_admin_token="x" * 24).api_admin_token is not None
