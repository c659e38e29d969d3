"""Attack: guess the admin token (2,000 tries as fast as the API answers) and the console's
operator login, then use the right token. Past the API keys' limit every try is answered 429,
and so is the right token, from that client, until the window ends."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from tests.security.conftest import ADMIN_TOKEN
from tests.security.console_visitor import ConsoleVisitor

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("fresh_brake")]

LIMIT = 10  # IMAGEGEN_API_AUTH_FAILURES_PER_MINUTE's default
ADMIN_PATH = "/v1/admin/tenants/acme"


@pytest.fixture
def api(secure_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secure_stack.urls["api"], timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_guessing_the_admin_token_is_braked_right_token_included(api: httpx.Client) -> None:
    assert api.get(ADMIN_PATH, headers=bearer(ADMIN_TOKEN)).status_code == 200
    codes = [api.get(ADMIN_PATH, headers=bearer(f"guess-{n:04d}")).status_code for n in range(2000)]
    assert codes[:LIMIT] == [401] * LIMIT
    assert set(codes[LIMIT:]) == {429}
    right = api.put(ADMIN_PATH, json={"weight": 7}, headers=bearer(ADMIN_TOKEN))
    assert right.status_code == 429
    assert 1 <= int(right.headers["retry-after"]) <= 60


def test_guessing_the_operator_login_is_braked_right_token_included(
    secure_stack: Stack,
) -> None:
    visitor = ConsoleVisitor(secure_stack.urls["api"])
    try:
        codes = [
            visitor.post("/console/login", {"key": f"guess-{n}"}).status_code for n in range(50)
        ]
        assert codes[:LIMIT] == [401] * LIMIT
        assert set(codes[LIMIT:]) == {429}
        assert visitor.post("/console/login", {"key": ADMIN_TOKEN}).status_code == 429
        assert visitor.http.get("/console/operator").status_code == 303  # not logged in
    finally:
        visitor.close()
