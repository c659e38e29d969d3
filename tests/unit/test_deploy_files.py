"""docker-compose.yml, ops/Dockerfile, ops/k8s, Prometheus, Grafana and IAM files, checked
without a Docker engine or a cluster: they parse, and every reference in them resolves."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import worker.metrics  # noqa: F401  (registers the worker's metrics)
from imagegen.settings import Settings
from producer.api.metrics import FleetCollector

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
PYTHON_SERVICES = {
    "emulator",
    "s3",
    "s3-bucket",
    "api",
    "worker-interactive",
    "worker-webhooks",
    "flower",
}
LONG_RUNNING = PYTHON_SERVICES - {"s3-bucket"} | {"redis", "prometheus", "grafana"}
ON_CI = __import__("os").environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((OPS / "k8s").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


@pytest.fixture(scope="module")
def metric_names() -> set[str]:
    """Every sample name the API and the workers export."""
    registry = CollectorRegistry()
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    redis = fakeredis.FakeRedis(decode_responses=True)
    redis.hset(
        "imagegen:stats",
        mapping={"jobs|m|succeeded": 1, "images|m": 1, "retries|X": 1, "webhooks|delivered": 1},
    )
    registry.register(FleetCollector(redis, settings))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    for text in (generate_latest(registry), generate_latest(REGISTRY)):
        for family in text_string_to_metric_families(text.decode()):
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def referenced_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\bimagegen_[a-z0-9_]+", expression))


# -- compose ----------------------------------------------------------------------------------


def test_the_full_stack_is_in_compose(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == LONG_RUNNING | {"s3-bucket"}


def test_python_services_share_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {services[name]["image"] for name in PYTHON_SERVICES} == {"bedrock-imagegen:local"}
    assert {services[name]["build"]["dockerfile"] for name in PYTHON_SERVICES} == {"ops/Dockerfile"}


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        assert compose["services"][name].get("healthcheck", {}).get("test"), name


def test_dependencies_exist_and_wait_for_health(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            expected = (
                "service_completed_successfully" if dependency == "s3-bucket" else "service_healthy"
            )
            assert rule["condition"] == expected, f"{name} -> {dependency}"
    assert set(services["worker-interactive"]["depends_on"]) == {"redis", "emulator", "s3-bucket"}


def test_workers_serve_their_queues_with_names(compose: dict[str, Any]) -> None:
    commands = {
        name: " ".join(compose["services"][name]["command"])
        for name in ("worker-interactive", "worker-webhooks")
    }
    assert "-Q interactive,batch" in commands["worker-interactive"]
    assert "-n worker-interactive@%h" in commands["worker-interactive"]
    assert "-Q webhooks" in commands["worker-webhooks"]
    grace = compose["services"]["worker-interactive"]["stop_grace_period"]
    assert int(grace.rstrip("s")) > Settings(_env_file=None).task_time_limit_s  # type: ignore[call-arg]


def test_redis_keeps_an_append_only_file_and_needs_a_password(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    script = redis["command"][-1]
    assert "appendonly yes" in script
    assert "requirepass" in script
    assert "| exec redis-server -" in script  # the password from stdin, never on argv
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    app_url = compose["services"]["api"]["environment"]["IMAGEGEN_REDIS_URL"]
    assert app_url.startswith("redis://:${REDIS_PASSWORD:?")


def test_k8s_pods_take_the_redis_url_from_the_secret(k8s: list[dict[str, Any]]) -> None:
    assert "IMAGEGEN_REDIS_URL" not in by_kind(k8s, "ConfigMap")["imagegen-settings"]["data"]
    for name, deployment in by_kind(k8s, "Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {item["name"]: item for item in container.get("env", [])}
            ref = env["IMAGEGEN_REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("imagegen-secrets", "REDIS_URL"), name


def test_the_production_image_is_pinned_and_has_no_local_stand_ins() -> None:
    dockerfile = (OPS / "Dockerfile").read_text()
    assert 'ARG EXTRAS=""' in dockerfile
    assert "--constraint requirements.lock" in dockerfile
    assert "[local]" not in dockerfile
    lock = (ROOT / "requirements.lock").read_text()
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += extra
    declared = [re.match(r"[A-Za-z0-9_.-]+", r)[0] for r in requirements]  # type: ignore[index]
    pinned = {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.M)}
    missing = {d.lower().replace("_", "-") for d in declared} - pinned - {"bedrock-imagegen"}
    assert missing == set(), f"run make lock: {sorted(missing)} not in requirements.lock"


def test_secrets_are_required_not_defaulted(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${FLOWER_BASIC_AUTH:?" in text
    assert "${REDIS_PASSWORD:?" in text
    assert "${GRAFANA_ADMIN_PASSWORD:?" in text
    assert "${IMAGEGEN_WEBHOOK_SECRET:?" in text
    example = (ROOT / ".env.example").read_text()
    assert "FLOWER_BASIC_AUTH=" in example
    assert "REDIS_PASSWORD=" in example
    assert "GRAFANA_ADMIN_PASSWORD=" in example
    assert "IMAGEGEN_WEBHOOK_SECRET=" in example


def test_mounted_ops_files_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (OPS / "Dockerfile").read_text()
    sources = [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"


# -- kubernetes -------------------------------------------------------------------------------


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def test_k8s_has_the_deployments_keda_and_disruption_budgets(k8s: list[dict[str, Any]]) -> None:
    deployments = by_kind(k8s, "Deployment")
    assert set(deployments) == {
        "imagegen-api",
        "imagegen-worker",
        "imagegen-webhooks",
        "imagegen-flower",
    }
    scaled = by_kind(k8s, "ScaledObject")["imagegen-worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    assert {t["metadata"]["listName"] for t in scaled["spec"]["triggers"]} == {
        "interactive",
        "batch",
    }
    for budget in by_kind(k8s, "PodDisruptionBudget").values():
        labels = budget["spec"]["selector"]["matchLabels"]
        assert any(
            d["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
            for d in deployments.values()
        ), budget["metadata"]["name"]


def test_k8s_selectors_and_references_resolve(k8s: list[dict[str, Any]]) -> None:
    deployments = by_kind(k8s, "Deployment")
    config_maps = by_kind(k8s, "ConfigMap")
    accounts = by_kind(k8s, "ServiceAccount")
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            template["metadata"]["labels"].items()
        ), name
        assert template["spec"]["serviceAccountName"] in accounts
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps
    for service in by_kind(k8s, "Service").values():
        selector = service["spec"]["selector"]
        assert any(
            d["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
            for d in deployments.values()
        )


def test_image_workers_get_a_grace_period_longer_than_a_job(k8s: list[dict[str, Any]]) -> None:
    worker = by_kind(k8s, "Deployment")["imagegen-worker"]["spec"]["template"]["spec"]
    limit_s = float(
        by_kind(k8s, "ConfigMap")["imagegen-settings"]["data"]["IMAGEGEN_TASK_TIME_LIMIT_S"]
    )
    assert worker["terminationGracePeriodSeconds"] >= limit_s
    probe = worker["containers"][0]["livenessProbe"]["exec"]["command"]
    assert "imagegen health worker" in " ".join(probe)


def test_k8s_settings_are_real_settings(k8s: list[dict[str, Any]]) -> None:
    data = by_kind(k8s, "ConfigMap")["imagegen-settings"]["data"]
    known = {f"IMAGEGEN_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= known


# -- prometheus, grafana, iam -----------------------------------------------------------------


def test_alert_rules_pass_promtool_or_the_schema(metric_names: set[str]) -> None:
    rules = yaml.safe_load((OPS / "prometheus" / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    for expected in (
        "Backlog",
        "Throttle",
        "DeadLetters",
        "WebhooksExhausted",
        "WorkerDown",
        "SpendRate",
    ):
        assert any(expected in name for name in names), expected
    for rule in alerts:
        assert rule["expr"]
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
        assert referenced_metrics(rule["expr"]) <= metric_names, rule["alert"]
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # the schema checks above stand in for it
    for args in (
        ["check", "rules", "alerts.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "alerts.test.yml"],  # the alerts fire when they should, and only then
    ):
        done = subprocess.run(
            [promtool, *args], cwd=OPS / "prometheus", capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_graphs_metrics_that_exist(metric_names: set[str]) -> None:
    dashboard = json.loads((OPS / "grafana" / "dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(dashboard["panels"]) >= 8
    used = set().union(*(referenced_metrics(e) for e in expressions))
    assert used <= metric_names, used - metric_names
    for needed in (
        "imagegen_jobs_total",
        # Where jobs wait: the dispatcher, not the Celery queues.
        "imagegen_dispatch_waiting_jobs",
        "imagegen_dispatch_oldest_waiting_seconds",
        "imagegen_estimated_spend_usd_total",
        "imagegen_rate_limit_effective_rpm",
        "imagegen_webhook_deliveries_total",
        "imagegen_worker_bedrock_latency_seconds_bucket",
    ):
        assert needed in used, needed
    provisioning = OPS / "grafana" / "provisioning"
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} <= uids


def test_iam_policy_is_least_privilege() -> None:
    policy = json.loads((OPS / "iam-policy.json").read_text())
    actions: dict[str, list[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else (statement["Action"])
        ):
            resources = statement["Resource"]
            actions.setdefault(action, []).extend(
                [resources] if isinstance(resources, str) else resources
            )
    assert set(actions) == {"bedrock:InvokeModel", "s3:PutObject", "s3:GetObject"}
    assert all(
        ":foundation-model/stability." in arn or ":inference-profile/us.stability." in arn
        for arn in actions["bedrock:InvokeModel"]
    )
    for action in ("s3:PutObject", "s3:GetObject"):
        assert all(arn.endswith(("/images/*", "/uploads/*")) for arn in actions[action])
    assert "*" not in json.dumps(policy).replace("/images/*", "").replace("/uploads/*", "")


def test_promtool_is_present_on_ci() -> None:
    if ON_CI:
        assert shutil.which("promtool"), ".ci/run installs Debian's prometheus for promtool"


def test_the_image_copies_every_package_the_distribution_has() -> None:
    dockerfile = (OPS / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    included = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert included
    packages = re.findall(r'"(\w+)\*"', included[1])
    assert "imagegen" in packages
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile, package


def test_the_built_distribution_carries_every_lua_script_and_console_file(
    tmp_path: Path,
) -> None:
    import zipfile

    from imagegen.redis.scripts import LIBRARY, SCRIPT_NAMES

    # From a copy of the source (no build/ left over from an earlier build can fill the gaps).
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(wheels),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = wheels.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SCRIPT_NAMES:
        assert f"imagegen/redis/scripts/{name}.lua" in names
    for part in LIBRARY:
        assert f"imagegen/redis/scripts/lib/{part}.lua" in names
    console = ROOT / "producer" / "console"
    for folder in ("templates", "static"):
        for path in (console / folder).iterdir():
            assert f"producer/console/{folder}/{path.name}" in names


def test_a_worker_that_exits_is_restarted_and_probed(
    compose: dict[str, Any], k8s: list[dict[str, Any]]
) -> None:
    """Compose restarts every worker that exits (the YAML anchor carries the policy); Kubernetes
    Deployments always restart their pods, and a worker that stops answering its ping fails its
    liveness probe."""
    services = compose["services"]
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    assert workers
    for name, service in workers.items():
        assert service.get("restart") == "unless-stopped", name
        assert "imagegen health worker" in " ".join(service["healthcheck"]["test"]), name
    deployments = [
        d for d in k8s if d["kind"] == "Deployment" and "worker" in d["metadata"]["name"]
    ]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("restartPolicy", "Always") == "Always"
        [container] = pod["containers"]
        assert "imagegen health worker" in " ".join(container["livenessProbe"]["exec"]["command"])


def test_the_deployed_api_names_its_process_count(
    compose: dict[str, Any], k8s: list[dict[str, Any]]
) -> None:
    """Left unset, the API starts one process per CPU it sees: a whole node's in a pod."""
    assert compose["services"]["api"]["environment"]["IMAGEGEN_API_WORKERS"] == (
        "${IMAGEGEN_API_WORKERS:-2}"
    )
    [container] = by_kind(k8s, "Deployment")["imagegen-api"]["spec"]["template"]["spec"][
        "containers"
    ]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert int(env["IMAGEGEN_API_WORKERS"]) >= 2
    assert "--workers" not in container["command"]
