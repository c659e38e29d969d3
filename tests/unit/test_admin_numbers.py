"""Every number an operator sets through the admin API is finite and bounded: 1e308, Infinity,
NaN and 2^63 are each a 422 naming the field, and nothing is stored (they used to be a 500, or
stored as null, or accepted); the operators' client, which the CLI uses, refuses them too."""

from __future__ import annotations

import math
from collections.abc import Iterator

import fakeredis
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imagegen.errors import InvalidRequestError
from imagegen.settings import Settings
from imagegen.store.spend import Budget
from producer.api import create_app
from producer.client import Client

ADMIN_TOKEN = "an-admin-token-of-thirty-two-chars"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
LIMITS = "/v1/admin/tenants/acme"
BUDGET = "/v1/admin/tenants/acme/budget"
# What Python's JSON reader makes of each: a float too large, infinities, not a number, and an
# integer past 64 bits.
BAD = ["1e308", "1e400", "Infinity", "-Infinity", "NaN", str(2**63)]
FIELDS = [
    (LIMITS, "weight"),
    (LIMITS, "rate_rpm"),
    (LIMITS, "max_concurrency"),
    (BUDGET, "daily_hard"),
    (BUDGET, "daily_soft"),
    (BUDGET, "monthly_hard"),
    (BUDGET, "monthly_soft"),
]


@pytest.fixture
def admin_api(settings: Settings) -> Iterator[tuple[TestClient, Client]]:
    settings = settings.model_copy(update={"api_admin_token": SecretStr(ADMIN_TOKEN)})
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield http, Client(settings, redis_client=redis)


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(("path", "field"), FIELDS)
def test_a_number_out_of_bounds_is_a_422_naming_its_field(
    admin_api: tuple[TestClient, Client], path: str, field: str, value: str
) -> None:
    http, _ = admin_api
    before = http.get(path, headers=ADMIN).json()
    answer = http.put(path, content=f'{{"{field}": {value}}}', headers=ADMIN)
    assert answer.status_code == 422, answer.text
    fields = [error["field"] for error in answer.json()["errors"]]
    assert fields, answer.text
    assert all(name.split(".")[-1] == field for name in fields), fields
    assert http.get(path, headers=ADMIN).json() == before


def test_numbers_within_bounds_are_stored(admin_api: tuple[TestClient, Client]) -> None:
    http, client = admin_api
    limits = {"weight": 1000, "rate_rpm": 1_000_000, "max_concurrency": 100_000}
    assert http.put(LIMITS, json=limits, headers=ADMIN).status_code == 200
    found = client.tenant_limits("acme")
    assert (found.weight, found.rate_rpm, found.max_concurrency) == (1000, 1_000_000, 100_000)
    budget = {"daily_hard": 1e9, "monthly_soft": 0}
    assert http.put(BUDGET, json=budget, headers=ADMIN).json()["daily_hard"] == 1e9


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308, 2**63])
def test_the_operator_client_refuses_them_too(settings: Settings, value: float) -> None:
    """The CLI (imagegen tenants set, imagegen budgets set) and scripts go through it."""
    operator = Client(settings, redis_client=fakeredis.FakeRedis(decode_responses=True)).operator
    for field in ("weight", "rate_rpm", "max_concurrency"):
        with pytest.raises(InvalidRequestError) as caught:
            operator.set_tenant_limits("acme", **{field: value})
        assert [error.field for error in caught.value.errors] == [field]
    for field in ("daily_hard", "monthly_soft"):
        with pytest.raises(InvalidRequestError) as caught:
            operator.set_budget(Budget("acme", **{field: value}))
        assert [error.field for error in caught.value.errors] == [field]
    assert operator.tenant_limits("acme").rate_rpm == settings.tenant_rate_limit_rpm
    # A negative value still clears a limit back to the default.
    assert operator.set_tenant_limits("acme", rate_rpm=-1).rate_rpm == (
        settings.tenant_rate_limit_rpm
    )
