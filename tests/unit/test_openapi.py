"""The OpenAPI document at /openapi.json: valid OpenAPI 3.1 (openapi-spec-validator), keys as a
bearer security scheme (not a header parameter), one problem+json schema for every error,
operation ids and tags a client generator turns into good names, and examples that match their
schemas."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from imagegen.settings import Settings
from producer.api import create_app
from producer.client import Client

METHODS = {"get", "put", "post", "delete", "patch"}
PROBLEM_TYPE = "application/problem+json"
EXPECTED_IDS = {
    "POST /v1/jobs": "submitJob",
    "GET /v1/jobs": "listJobs",
    "GET /v1/jobs/{job_id}": "getJob",
    "POST /v1/jobs/{job_id}/cancel": "cancelJob",
    "GET /v1/jobs/{job_id}/image": "getJobImage",
    "GET /v1/jobs/{job_id}/events": "streamJobEvents",
    "POST /v1/batches": "submitBatch",
    "GET /v1/batches/{batch_id}": "getBatch",
    "POST /v1/chains": "submitChain",
    "GET /v1/chains/{chain_id}": "getChain",
    "GET /v1/chains/{chain_id}/image": "getChainImage",
    "POST /v1/uploads": "uploadImage",
    "POST /v1/uploads/presigned": "createPresignedUpload",
    "GET /v1/models": "listModels",
    "GET /v1/webhook-secrets": "getWebhookSecrets",
    "POST /v1/webhook-secrets/rotate": "rotateWebhookSecrets",
    "GET /v1/tenant": "getTenant",
    "GET /v1/spend": "getSpend",
    "GET /v1/admin/tenants/{tenant}": "getTenantLimits",
    "PUT /v1/admin/tenants/{tenant}": "setTenantLimits",
    "GET /v1/admin/tenants/{tenant}/budget": "getTenantBudget",
    "PUT /v1/admin/tenants/{tenant}/budget": "setTenantBudget",
    "GET /healthz": "getHealth",
    "GET /readyz": "getReadiness",
}


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as client:
        client.app_client = Client(settings, redis_client=redis)  # type: ignore[attr-defined]
        yield client


@pytest.fixture
def document(http: TestClient) -> dict[str, Any]:
    response = http.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.json()
    return found


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises, naming the first fault, when it is not


def test_keys_are_a_bearer_scheme_not_a_header_parameter(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "igk_...",
        "description": schemes["apiKey"]["description"],
    }
    assert (schemes["adminToken"]["type"], schemes["adminToken"]["scheme"]) == ("http", "bearer")
    for name, operation in operations(document):
        headers = {p["name"].lower() for p in operation.get("parameters", [])}
        assert "authorization" not in headers, name
        if name.startswith(("GET /healthz", "GET /readyz")):
            assert operation["security"] == [], name
        elif "/v1/admin/" in name:
            assert operation["security"] == [{"adminToken": []}], name
        else:
            assert operation["security"] == [{"apiKey": []}], name
            assert "401" in operation["responses"], name


def test_every_error_response_is_the_one_problem_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "ProblemField" in schemas
    assert not {"HTTPValidationError", "ValidationError"} & set(schemas)
    for name, operation in operations(document):
        for status, response in operation["responses"].items():
            if status[0] not in "45" or name == "GET /readyz":  # a probe answers its report
                continue
            assert list(response["content"]) == [PROBLEM_TYPE], f"{name} {status}"
            content = response["content"][PROBLEM_TYPE]
            assert content["schema"] == {"$ref": "#/components/schemas/Problem"}, name
            [example] = content["examples"].values()
            assert example["value"]["status"] == int(status), f"{name} {status}"
            assert response["description"], f"{name} {status}"
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], f"{name} {status}"


def test_operation_ids_and_tags_make_good_method_names(document: dict[str, Any]) -> None:
    found = {name: operation.get("operationId") for name, operation in operations(document)}
    assert found == EXPECTED_IDS
    declared = {tag["name"]: tag.get("description") for tag in document["tags"]}
    assert all(declared.values()), declared
    for name, operation in operations(document):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation["operationId"]), name
        assert len(operation["tags"]) == 1, name
        assert operation["tags"][0] in declared, name
        assert operation.get("summary"), name


def test_every_example_matches_its_schema(document: dict[str, Any]) -> None:
    registry = Registry().with_resource(
        "urn:openapi", Resource.from_contents(document, default_specification=DRAFT202012)
    )

    def check(schema: dict[str, Any], value: Any, where: str) -> None:
        validator = Draft202012Validator(
            _rebase(schema), registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        errors = [error.message for error in validator.iter_errors(value)]
        assert not errors, f"{where}: {errors}"

    checked = 0
    for name, schema in document["components"]["schemas"].items():
        for index, example in enumerate(schema.get("examples", [])):
            check(schema, example, f"components.schemas.{name}.examples[{index}]")
            checked += 1
    for name, operation in operations(document):
        bodies = [("requestBody", operation.get("requestBody", {}))]
        bodies += [(status, r) for status, r in operation["responses"].items()]
        for where, body in bodies:
            for media, content in body.get("content", {}).items():
                for key, example in content.get("examples", {}).items():
                    check(content["schema"], example["value"], f"{name} {where} {media} {key}")
                    checked += 1
        for parameter in operation.get("parameters", []):
            for example in parameter["schema"].get("examples", []):
                check(parameter["schema"], example, f"{name} {parameter['name']}")
                checked += 1
    assert checked >= 15


def _rebase(schema: Any) -> Any:
    """Local references (``#/components/...``) pointed at the document's resource."""
    if isinstance(schema, dict):
        return {
            key: (f"urn:openapi{value}" if key == "$ref" else _rebase(value))
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(item) for item in schema]
    return schema


def test_docs_offer_authorize_with_the_bearer_scheme(http: TestClient) -> None:
    page = http.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    # Swagger UI draws its Authorize button from the document's security schemes.
    assert http.get("/openapi.json").json()["components"]["securitySchemes"]


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "send Authorization: Bearer <API key>"),
        ("Bearer igk_000000000000_nope", "unknown key"),
        ("Basic dXNlcjpwYXNz", "unknown key"),
        ("Bearer " + "x" * 600, "unknown key"),
    ],
)
def test_the_key_is_still_read_from_the_authorization_header(
    http: TestClient, authorization: str | None, detail: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = http.get("/v1/jobs", headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["detail"] == detail
    assert answer.headers["www-authenticate"].startswith("Bearer")
    _, key = http.app_client.api_keys.create("acme")  # type: ignore[attr-defined]
    assert http.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
