"""Attack: a page on another site, or on another port of the same host (same-site, so the
victim's SameSite=Strict cookie goes along), posts the console's forms with the victim's
session: cancel a waiting job, submit (and bill) the attacker's prompt, redeliver webhooks, log
out, an operator's replay, and log the victim in as the attacker's tenant (login CSRF). Every
one is refused before anything changes; the console's own forms still work. Over plain HTTP on
the real API."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from devstack.processes import free_port
from devstack.stack import Stack
from imagegen.contract import JobSpec
from imagegen.records import JobStatus, NewJob
from imagegen.store.spend import Budget
from producer.client import Client
from tests.security.conftest import ADMIN_TOKEN
from tests.security.console_visitor import ConsoleVisitor, cross_site, same_site_other_port

pytestmark = pytest.mark.integration

CORE = "stability.stable-image-core-v1:0"
ATTACKERS: dict[str, Callable[[], dict[str, str]]] = {
    "cross-site": cross_site,
    "same-site, another port": lambda: same_site_other_port(free_port()),
}


@pytest.fixture(scope="module")
def client(secure_stack: Stack) -> Iterator[Client]:
    with Client(secure_stack.settings()) as opened:
        # The victim's jobs wait (no budget: its queue is paused), so there is one to cancel.
        opened.set_budget(Budget("victim", daily_hard=0.0))
        yield opened
        opened.set_budget(Budget("victim"))


@pytest.fixture
def victim(secure_stack: Stack, client: Client) -> Iterator[ConsoleVisitor]:
    _, key = client.api_keys.create("victim")
    visitor = ConsoleVisitor(secure_stack.urls["api"])
    visitor.log_in(key)
    yield visitor
    visitor.close()


def waiting_job(client: Client, name: str) -> str:
    spec = JobSpec.parse({"request": {"prompt": "waits its turn"}})
    job = NewJob(f"victim.{name}", CORE, spec, 1, "victim")
    client.jobs.create([job], dispatch=client.dispatch)
    return job.job_id


def forged(visitor: ConsoleVisitor, path: str, attacker: str, **form: str) -> list[int]:
    """The attacker's post as the victim's browser sends it: without the form token (the
    attacker cannot read it), and even with it."""
    headers = ATTACKERS[attacker]()
    return [
        visitor.http.post(path, data=data, headers=headers).status_code
        for data in (form, {**form, "csrf": visitor.token()})
    ]


@pytest.mark.parametrize("attacker", sorted(ATTACKERS))
def test_forged_cancel_submit_redeliver_and_logout_are_refused(
    victim: ConsoleVisitor, client: Client, attacker: str
) -> None:
    job_id = waiting_job(client, f"keep-{attacker[:5]}")
    jobs_before = len(client.list_jobs(tenant="victim", limit=200).jobs)
    assert forged(victim, f"/console/jobs/{job_id}/cancel", attacker) == [403, 403]
    assert client.get(job_id).status is JobStatus.QUEUED
    submit = {"model_id": CORE, "f.prompt": "the attacker's prompt, on the victim's bill"}
    assert forged(victim, "/console/jobs", attacker, **submit) == [403, 403]
    assert len(client.list_jobs(tenant="victim", limit=200).jobs) == jobs_before
    assert forged(victim, f"/console/jobs/{job_id}/redeliver", attacker) == [403, 403]
    assert forged(victim, "/console/logout", attacker) == [403, 403]
    assert victim.http.get("/console").status_code == 200  # still logged in


@pytest.mark.usefixtures("fresh_brake")  # the operator logs in from 127.0.0.1 like the attacks
@pytest.mark.parametrize("attacker", sorted(ATTACKERS))
def test_a_forged_replay_is_refused(secure_stack: Stack, attacker: str) -> None:
    operator = ConsoleVisitor(secure_stack.urls["api"])
    try:
        operator.log_in(ADMIN_TOKEN)
        assert forged(operator, "/console/operator/replay", attacker, job_id="x") == [403, 403]
        assert operator.post("/console/operator/replay", {"job_id": "x"}).status_code == 303
    finally:
        operator.close()


@pytest.mark.parametrize("attacker", sorted(ATTACKERS))
def test_login_csrf_is_refused(victim: ConsoleVisitor, client: Client, attacker: str) -> None:
    """The attacker's page posts the attacker's own key: the victim would work, and upload, in
    the attacker's tenant."""
    _, attackers_key = client.api_keys.create("mallory")
    assert forged(victim, "/console/login", attacker, key=attackers_key) == [403, 403]
    page = victim.http.get("/console")
    assert page.status_code == 200
    assert "tenant <b>victim</b>" in page.text


def test_the_consoles_own_forms_still_work(victim: ConsoleVisitor, client: Client) -> None:
    job_id = waiting_job(client, "cancel-me")
    assert victim.post(f"/console/jobs/{job_id}/cancel").status_code == 303
    assert client.get(job_id).status is JobStatus.CANCELED
    submitted = victim.post("/console/jobs", {"model_id": CORE, "f.prompt": "a lighthouse"})
    assert submitted.status_code == 303, submitted.text
    assert victim.post(f"/console/jobs/{job_id}/redeliver").status_code == 303
    assert victim.post("/console/logout").status_code == 303
    assert victim.http.get("/console").status_code == 303  # logged out
