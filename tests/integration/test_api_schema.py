"""Schemathesis against our own OpenAPI document, on a real uvicorn server with a real worker:
no generated request may cause a 5xx or a response the schema does not describe."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from devstack.stack import Stack
from producer.client import Client

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 80
# A schema-valid job may still break a rule the schema cannot state (a webhook host that
# resolves to a private address, a deadline in the past, a model not allowed here): those get a
# 422 problem naming the field, which this check would call a failure.
BUSINESS_RULES = [positive_data_acceptance]
MINIMUM_CASES = 500


@pytest.fixture(scope="module")
def schema_api(stack: Stack) -> tuple[str, dict[str, str]]:
    url = stack.start_api(extra_env={"IMAGEGEN_API_MAX_WAIT_S": "0.2"})
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("schemathesis")
    return url, {"Authorization": f"Bearer {key}"}


def run_operation(operation: Any, headers: dict[str, str]) -> int:
    """Generate and send cases for one operation; returns how many ran."""
    ran = 0

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        nonlocal ran
        ran += 1
        case.call_and_validate(headers=headers, timeout=30, excluded_checks=BUSINESS_RULES)

    check()
    return ran


def test_no_5xx_and_every_response_matches_the_schema(
    schema_api: tuple[str, dict[str, str]],
) -> None:
    url, headers = schema_api
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ran = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        ran[f"{operation.method.upper()} {operation.path}"] = run_operation(operation, headers)
    assert sum(ran.values()) >= MINIMUM_CASES, ran
