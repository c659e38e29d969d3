"""The emulator serving several pools: a request belongs to the pool its SigV4 credential scope
names (access key and Region, the access key, the Region), each with its own quota, faults and
access, changed at run time by ``PUT /_emulator/pools/{name}``. boto3 over HTTP."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.behaviour import PoolBehaviour

MODEL = "stability.stable-image-core-v1:1"


def call(url: str, key: str, region: str) -> str:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}),
    )
    try:
        client.invoke_model(modelId=MODEL, body=json.dumps({"prompt": "a fox"}))
    except ClientError as e:
        return str(e.response["Error"]["Code"])
    return "ok"


def put(url: str, name: str, behaviour: dict[str, Any] | None) -> int:
    body = b"" if behaviour is None else json.dumps(behaviour).encode()
    request = urllib.request.Request(f"{url}/_emulator/pools/{name}", data=body, method="PUT")
    with urllib.request.urlopen(request) as answer:
        return int(answer.status)


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_emulator/stats") as answer:
        return dict(json.load(answer))


def test_each_account_and_region_behaves_as_its_pool_says(start_emulator: Any) -> None:
    url = start_emulator(
        pools={
            "AKIAACCOUNTB": PoolBehaviour(denied_models=(MODEL,)),
            "AKIAACCOUNTC/us-east-1": PoolBehaviour(unsubscribed_models=(MODEL,)),
            "eu-central-1": PoolBehaviour(missing_models=(MODEL,)),
            "us-east-2": PoolBehaviour(quota_rpm=6, quota_burst=1),
        }
    )
    assert call(url, "AKIAACCOUNTA", "us-west-2") == "ok"  # no pool: the emulator's behaviour
    assert call(url, "AKIAACCOUNTB", "us-west-2") == "AccessDeniedException"
    assert call(url, "AKIAACCOUNTC", "us-east-1") == "ValidationException"  # no subscription
    assert call(url, "AKIAACCOUNTC", "us-west-2") == "ok"  # that account elsewhere
    assert call(url, "AKIAACCOUNTA", "eu-central-1") == "ResourceNotFoundException"
    assert [call(url, "AKIAACCOUNTA", "us-east-2") for _ in range(2)] == [
        "ok",
        "ThrottlingException",  # its own quota: one every 10 s
    ]
    pools = stats(url)["pools"]
    assert pools["us-east-2"] == {"ok": 1, "ThrottlingException": 1}
    assert pools["AKIAACCOUNTB"] == {"AccessDeniedException": 1}


def test_a_pools_behaviour_changes_at_run_time(start_emulator: Any) -> None:
    url = start_emulator()
    assert call(url, "AKIAACCOUNTA", "us-west-2") == "ok"
    assert put(url, "us-west-2", {"fault_rates": {"unavailable": 1.0}}) == 200
    assert call(url, "AKIAACCOUNTA", "us-west-2") == "ServiceUnavailableException"
    assert call(url, "AKIAACCOUNTA", "us-east-1") == "ok"
    assert put(url, "us-west-2", None) == 200  # forgotten: back to the emulator's behaviour
    assert call(url, "AKIAACCOUNTA", "us-west-2") == "ok"


def test_a_bad_pool_behaviour_is_refused(start_emulator: Any) -> None:
    url = start_emulator()
    with pytest.raises(urllib.error.HTTPError) as refused:
        put(url, "us-west-2", {"fault_rates": {"meteor": 1.0}})
    assert refused.value.code == 400
    refused.value.close()
    with pytest.raises(ValueError, match="unknown pool fields"):
        PoolBehaviour.parse({"quota": 5})
