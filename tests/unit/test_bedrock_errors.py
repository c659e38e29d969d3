"""Each Bedrock error code becomes a ``BedrockCallError`` with our policy (botocore Stubber)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from imagegen.bedrock import make_bedrock_client
from imagegen.errors import BedrockCallError
from imagegen.settings import Settings
from tests.support import bedrock_payload, emulator_stats
from worker.bedrock import invoke_model
from worker.retry import Disposition, RetryPolicy, disposition_of

MODEL = "stability.stable-image-core-v1:0"

# The error table of DESIGN.md: code, HTTP status, what we do.
TABLE = [
    ("ThrottlingException", 429, Disposition.RETRY),
    ("ModelNotReadyException", 429, Disposition.RETRY),
    ("ServiceUnavailableException", 503, Disposition.RETRY),
    ("InternalServerException", 500, Disposition.RETRY),
    ("ModelTimeoutException", 408, Disposition.RETRY),
    ("ModelErrorException", 424, Disposition.RETRY_ONCE),
    ("ValidationException", 400, Disposition.FAIL),
    ("AccessDeniedException", 403, Disposition.FAIL),
    ("ResourceNotFoundException", 404, Disposition.FAIL),
    ("ServiceQuotaExceededException", 400, Disposition.FAIL),
]


@pytest.fixture
def stubbed() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client("bedrock-runtime", region_name="us-west-2")
    with Stubber(client) as stubber:
        yield client, stubber


@pytest.mark.parametrize(("code", "status", "disposition"), TABLE)
def test_each_error_code_is_classified(
    stubbed: tuple[object, Stubber], code: str, status: int, disposition: Disposition
) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "invoke_model", service_error_code=code, service_message="nope", http_status_code=status
    )
    with pytest.raises(BedrockCallError) as caught:
        invoke_model(client, MODEL, {"prompt": "a"})  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.http_status == status
    assert disposition_of(caught.value) is disposition


def test_retry_after_header_becomes_a_hint(stubbed: tuple[object, Stubber]) -> None:
    client, stubber = stubbed
    stubber.add_client_error(
        "invoke_model",
        service_error_code="ServiceUnavailableException",
        http_status_code=503,
        response_meta={"HTTPHeaders": {"retry-after": "7"}},
    )
    with pytest.raises(BedrockCallError) as caught:
        invoke_model(client, MODEL, {"prompt": "a"})  # type: ignore[arg-type]
    assert caught.value.retry_after_s == 7.0
    decision = RetryPolicy(max_attempts=5, base_s=0.1, cap_s=30).decide(caught.value, attempt=1)
    assert decision.retry
    assert decision.delay_s >= 7.0


def test_success_returns_the_payload_and_latency(stubbed: tuple[object, Stubber]) -> None:
    client, stubber = stubbed
    raw = json.dumps(bedrock_payload()).encode()
    stubber.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(raw), len(raw)), "contentType": "application/json"},
        {
            "modelId": MODEL,
            "body": json.dumps({"prompt": "a"}),
            "contentType": "application/json",
            "accept": "application/json",
        },
    )
    answer = invoke_model(client, MODEL, {"prompt": "a"})  # type: ignore[arg-type]
    assert answer.payload["seeds"] == [1234]
    assert answer.latency_ms >= 0


def test_botocore_retries_are_off_and_timeouts_explicit() -> None:
    settings = Settings(bedrock_connect_timeout_s=2, bedrock_read_timeout_s=33, _env_file=None)  # type: ignore[call-arg]
    client = make_bedrock_client(settings, max_pool_connections=20)
    config = client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert config.connect_timeout == 2
    assert config.read_timeout == 33
    assert config.max_pool_connections == 20


def test_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    settings = Settings(
        bedrock_endpoint_url="http://127.0.0.1:9", bedrock_connect_timeout_s=1, _env_file=None
    )  # type: ignore[call-arg]
    client = make_bedrock_client(settings, max_pool_connections=2)
    with pytest.raises(BedrockCallError) as caught:
        invoke_model(client, MODEL, {"prompt": "a"})
    assert caught.value.code in {"ConnectionError", "ConnectTimeout"}
    assert disposition_of(caught.value) is Disposition.RETRY


def test_read_timeout_is_retryable_and_not_retried_by_botocore(start_emulator: object) -> None:
    url = start_emulator(latency_ms=1500)  # type: ignore[operator]
    settings = Settings(bedrock_endpoint_url=url, bedrock_read_timeout_s=0.3, _env_file=None)  # type: ignore[call-arg]
    client = make_bedrock_client(settings, max_pool_connections=2)
    with pytest.raises(BedrockCallError) as caught:
        invoke_model(client, MODEL, {"prompt": "a"})
    assert caught.value.code == "ReadTimeout"
    assert disposition_of(caught.value) is Disposition.RETRY
    assert emulator_stats(url)["requests"] == 1, (
        "botocore must not retry a generation behind our back"
    )
