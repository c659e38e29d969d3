"""The admin token and the console's operator login have the API keys' brake: wrong tokens are
counted per client and answered 429 past the limit, and the right token after many wrong ones
is refused too until the window ends (it used to be accepted after any number of guesses)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import fakeredis
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imagegen.failed_auth import client_failures
from imagegen.settings import Settings
from imagegen.store.tenants import AuthFailures
from producer.api import create_app
from producer.client import Client

ADMIN_TOKEN = "an-admin-token-of-thirty-two-chars"
LIMIT = 10
OWN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[TestClient, Client, fakeredis.FakeRedis]]:
    settings = settings.model_copy(
        update={"api_admin_token": SecretStr(ADMIN_TOKEN), "api_auth_failures_per_minute": LIMIT}
    )
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield http, Client(settings, redis_client=redis), redis


def admin(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_wrong_admin_tokens_are_braked_and_so_is_the_right_one_after_them(
    api: tuple[TestClient, Client, fakeredis.FakeRedis],
) -> None:
    http, _, redis = api
    path = "/v1/admin/tenants/acme"
    assert http.get(path, headers=admin(ADMIN_TOKEN)).status_code == 200
    codes = [http.get(path, headers=admin(f"guess-{n}")).status_code for n in range(40)]
    assert codes[:LIMIT] == [401] * LIMIT
    assert set(codes[LIMIT:]) == {429}
    braked = http.put(path, json={"weight": 5}, headers=admin(ADMIN_TOKEN))
    assert braked.status_code == 429
    assert int(braked.headers["retry-after"]) >= 1
    assert braked.json()["title"] == "Too many failed authentications"
    # When the window ends, the right token works again.
    for key in redis.keys("*authfail*"):
        redis.delete(key)
    assert http.get(path, headers=admin(ADMIN_TOKEN)).status_code == 200


def test_a_client_braked_for_admin_tokens_still_uses_its_api_key(
    api: tuple[TestClient, Client, fakeredis.FakeRedis],
) -> None:
    http, client, _ = api
    _, key = client.api_keys.create("acme")
    for n in range(LIMIT + 5):
        http.get("/v1/admin/tenants/acme", headers=admin(f"guess-{n}"))
    assert http.get("/v1/jobs", headers=admin(key)).status_code == 200


def login(http: TestClient, secret: str) -> int:
    page = http.get("/console/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    answer = http.post(
        "/console/login",
        data={"key": secret, "csrf": token[1]},
        headers=OWN,
        follow_redirects=False,
    )
    return answer.status_code


def test_the_operator_login_is_braked_even_for_the_right_token(
    api: tuple[TestClient, Client, fakeredis.FakeRedis],
) -> None:
    http, client, _ = api
    codes = [login(http, f"wrong-{n}") for n in range(50)]
    assert codes[:LIMIT] == [401] * LIMIT
    assert set(codes[LIMIT:]) == {429}
    assert login(http, ADMIN_TOKEN) == 429
    # A tenant's valid key is never refused (key ids are public: refusing would let anyone
    # lock a tenant out).
    _, key = client.api_keys.create("acme")
    assert login(http, key) == 303


def test_the_brake_reads_the_count_the_failures_add_up_to(
    api: tuple[TestClient, Client, fakeredis.FakeRedis],
) -> None:
    _, _, redis = api
    failures = AuthFailures(redis, 60)
    assert client_failures(redis, "192.0.2.1") == (0, 0)
    for _ in range(3):
        failures.add("192.0.2.1", "some-key")
    count, retry_after_s = client_failures(redis, "192.0.2.1")
    assert count == 3
    assert 1 <= retry_after_s <= 60


def test_the_metrics_token_has_the_same_brake(settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "api_metrics_token": SecretStr("a-metrics-token"),
            "api_auth_failures_per_minute": 3,
        }
    )
    with TestClient(create_app(settings, redis_client=fakeredis.FakeRedis())) as http:
        codes = [http.get("/metrics", headers=admin(f"guess-{n}")).status_code for n in range(6)]
        assert codes == [401, 401, 401, 429, 429, 429]
        assert http.get("/metrics", headers=admin("a-metrics-token")).status_code == 429
