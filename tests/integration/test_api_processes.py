"""The API in two processes on one port (``IMAGEGEN_API_WORKERS=2``), against real Redis, S3 and
the emulator: both processes serve, and what the API decides holds across them (a tenant's
queue cap, the brake on bad keys, console sessions), because it is decided in Redis.

A keep-alive connection stays with the process that accepted it, and ``/healthz`` names that
process: each connection below knows which process serves it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from producer.client import Client
from tests.integration.conftest import start_stack

pytestmark = pytest.mark.integration

PROCESSES_STACK_DB = 4
PROCESSES = 2
QUEUE_CAP = 12
AUTH_FAILURES = 6
JOB = {"request": {"prompt": "a lighthouse", "aspect_ratio": "16:9"}}


@pytest.fixture(scope="module")
def stack_of_two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """No worker: submitted jobs stay unfinished, so the cap is all that decides."""
    running = start_stack(tmp_path_factory.mktemp("processes"), PROCESSES_STACK_DB, workers=())
    running.start_api(
        extra_env={
            "IMAGEGEN_MAX_QUEUED_PER_TENANT": str(QUEUE_CAP),
            "IMAGEGEN_API_AUTH_FAILURES_PER_MINUTE": str(AUTH_FAILURES),
            "IMAGEGEN_API_KEEP_ALIVE_S": "120",
        },
        workers=PROCESSES,
    )
    yield running
    running.stop()


def process_of(http: httpx.Client) -> int:
    pid: int = http.get("/healthz").json()["process"]
    return pid


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


@pytest.fixture
def connections(stack_of_two: Stack) -> Iterator[dict[int, list[httpx.Client]]]:
    """Single keep-alive connections, by the process serving each; at least two per process."""
    url = stack_of_two.urls["api"]
    by_process: dict[int, list[httpx.Client]] = {}
    opened: list[httpx.Client] = []
    deadline = time.monotonic() + 30
    try:
        while len(by_process) < PROCESSES or min(map(len, by_process.values())) < 2:
            assert time.monotonic() < deadline, f"connections by process: {by_process}"
            http = httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_connections=1))
            opened.append(http)
            by_process.setdefault(process_of(http), []).append(http)
        yield by_process
    finally:
        for http in opened:
            http.close()


def round_robin(by_process: dict[int, list[httpx.Client]]) -> list[httpx.Client]:
    """Every connection, alternating between the processes."""
    columns = list(by_process.values())
    return [c[i] for i in range(max(map(len, columns))) for c in columns if i < len(c)]


def test_every_process_serves_and_belongs_to_the_api(
    stack_of_two: Stack, connections: dict[int, list[httpx.Client]]
) -> None:
    assert len(connections) == PROCESSES
    api_process = stack_of_two.processes.pid("api")
    assert {parent_of(pid) for pid in connections} == {api_process}
    for pid, same_process in connections.items():
        for http in same_process:  # a connection stays with its process
            assert process_of(http) == pid


def test_a_tenants_queue_cap_holds_across_processes(
    stack_of_two: Stack, connections: dict[int, list[httpx.Client]]
) -> None:
    with Client(stack_of_two.settings()) as client:
        _, capped = client.api_keys.create("capped")
        _, other = client.api_keys.create("other")
    capped_key = {"Authorization": f"Bearer {capped}"}
    spread = round_robin(connections)

    def submit(http: httpx.Client) -> list[int]:
        return [
            http.post("/v1/jobs", json=JOB, headers=capped_key).status_code
            for _ in range(QUEUE_CAP // 2)
        ]

    # Twice the cap at once or more, from every process together.
    with ThreadPoolExecutor(len(spread)) as pool:
        statuses = [s for answers in pool.map(submit, spread) for s in answers]
    assert len(statuses) >= 2 * QUEUE_CAP
    assert statuses.count(202) == QUEUE_CAP, statuses
    assert statuses.count(429) == len(statuses) - QUEUE_CAP, statuses
    for http in spread:  # whichever process is asked, the tenant has exactly its cap
        listed = http.get("/v1/jobs", params={"limit": 200}, headers=capped_key).json()
        assert len(listed["jobs"]) == QUEUE_CAP
        refused = http.post("/v1/jobs", json=JOB, headers=capped_key)
        assert refused.status_code == 429, refused.text
    # Another tenant is not affected.
    answered = spread[0].post("/v1/jobs", json=JOB, headers={"Authorization": f"Bearer {other}"})
    assert answered.status_code == 202, answered.text


def test_the_brake_on_bad_keys_counts_across_processes(
    stack_of_two: Stack, connections: dict[int, list[httpx.Client]]
) -> None:
    with Client(stack_of_two.settings()) as client:
        _, valid = client.api_keys.create("braked-caller")
    spread = round_robin(connections)
    bad = {"Authorization": "Bearer igk_0123456789ab_not-a-real-key"}
    statuses = [
        spread[i % len(spread)].get("/v1/jobs", headers=bad).status_code
        for i in range(3 * AUTH_FAILURES)
    ]
    # As many 401s as one process alone would allow, then 429 from every process.
    assert statuses == [401] * AUTH_FAILURES + [429] * (2 * AUTH_FAILURES)
    for http in spread:
        assert http.get("/v1/jobs", headers=bad).status_code == 429
        # A valid key is always accepted.
        assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {valid}"}).is_success


def test_a_console_session_opened_on_one_process_works_on_the_other(
    stack_of_two: Stack, connections: dict[int, list[httpx.Client]]
) -> None:
    with Client(stack_of_two.settings()) as client:
        _, key = client.api_keys.create("console-user")
    (first, *_), (second, *_) = connections.values()
    page = first.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token, page.text
    logged_in = first.post("/console/login", data={"key": key, "csrf": token[1]})
    assert logged_in.status_code == 303, logged_in.text
    assert logged_in.headers["location"] == "/console"
    session = first.cookies.get("imagegen_console")
    assert session
    assert process_of(first) != process_of(second)
    second.cookies.set("imagegen_console", session, path="/console")
    home = second.get("/console")
    assert home.status_code == 200, home.headers
    assert "console-user" in home.text
