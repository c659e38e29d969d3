"""``imagegen`` in this process against a real Redis and moto's S3: a job for any model of the
registry from the shell's words (typed ``--param``, ``--request``, ``--image`` files uploaded),
clear errors naming the field, and the progress bar's counts and ETA."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from imagegen.errors import InvalidRequestError
from imagegen.settings import get_settings
from producer.cli import main
from producer.cli.params import LocalImage, RequestParts, build_request
from producer.cli.progress import ProgressBar, render
from producer.client import Client
from tests.support import image_bytes

CORE = "stability.stable-image-core-v1:0"
CUTOUT = "us.stability.stable-image-remove-background-v1:0"
INPAINT = "us.stability.stable-image-inpaint-v1:0"
TRANSFER = "us.stability.stable-style-transfer-v1:0"
OUTPAINT = "us.stability.stable-outpaint-v1:0"
BUCKET = "cli-bucket"


def errors_of(model_id: str, parts: RequestParts) -> list[str]:
    with pytest.raises(InvalidRequestError) as caught:
        build_request(model_id, parts)
    return [str(e) for e in caught.value.errors]


def test_params_are_typed_as_the_model_takes_them() -> None:
    request = build_request(
        OUTPAINT,
        RequestParts(
            params=["left=64", "creativity=0.5", "style_preset=anime", "prompt=a=b"],
            images=["s3://bucket/in.png"],
        ),
    )
    assert request == {
        "left": 64,
        "creativity": 0.5,
        "style_preset": "anime",
        "prompt": "a=b",
        "image": "s3://bucket/in.png",
    }


def test_only_the_fields_given_are_sent() -> None:
    fields = {"prompt": "a harbour", "seed": None, "aspect_ratio": None}
    assert build_request(CORE, RequestParts(fields=fields)) == {"prompt": "a harbour"}


def test_request_json_is_the_base_and_params_win() -> None:
    request = build_request(CORE, RequestParts(base={"prompt": "a", "seed": 3}, params=["seed=9"]))
    assert request == {"prompt": "a", "seed": 9}


def test_an_unknown_field_is_named_with_the_models_fields() -> None:
    [message] = errors_of(CUTOUT, RequestParts(fields={"prompt": "a harbour"}))
    assert message == (
        "request.prompt: Remove Background (us.stability.stable-image-remove-background-v1:0) "
        "has no field 'prompt'; its fields: image, output_format"
    )


def test_every_bad_param_is_named_at_once() -> None:
    messages = errors_of(
        CUTOUT,
        RequestParts(params=["output_format=jpeg", "seed=x", "nothing"]),
    )
    assert messages == [
        "--param: 'nothing' is not key=value",
        "request.output_format: 'jpeg' is not one of png, webp",  # this model's formats
        "request.seed: Remove Background (us.stability.stable-image-remove-background-v1:0) "
        "has no field 'seed'; its fields: image, output_format",
    ]
    [number] = errors_of(CORE, RequestParts(params=["seed=1.5"]))
    assert number == "request.seed: '1.5' is not a whole number"


def test_images_fill_the_models_image_fields_in_order_or_by_name(tmp_path: Path) -> None:
    request = build_request(
        TRANSFER, RequestParts(images=[str(tmp_path / "a.png"), "job:01M96WWBY8M5VCJF5PEM2VGW2F"])
    )
    assert request == {
        "init_image": LocalImage(tmp_path / "a.png"),
        "style_image": "job:01M96WWBY8M5VCJF5PEM2VGW2F",
    }
    named = build_request(
        INPAINT,
        RequestParts(fields={"prompt": "a cat"}, images=["mask=s3://b/m.png", "s3://b/i.png"]),
    )
    assert named == {"prompt": "a cat", "mask": "s3://b/m.png", "image": "s3://b/i.png"}
    [extra] = errors_of(CUTOUT, RequestParts(images=["s3://b/1.png", "s3://b/2.png"]))
    assert "every input image of Remove Background" in extra
    [none] = errors_of(CORE, RequestParts(images=["s3://b/1.png"]))
    assert none.startswith("--image: Stable Image Core 1.0")
    assert "takes no input image" in none


@pytest.fixture
def shell(
    real_redis: Any, real_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    """``imagegen``'s environment: the test Redis and an S3 bucket (moto, in this process)."""
    monkeypatch.setenv("IMAGEGEN_REDIS_URL", real_redis_url)
    monkeypatch.setenv("IMAGEGEN_S3_BUCKET", BUCKET)
    monkeypatch.setenv("IMAGEGEN_ALLOWED_MODEL_IDS", json.dumps([CORE, CUTOUT, TRANSFER]))
    get_settings.cache_clear()
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        with Client(get_settings()) as client:
            yield client
    get_settings.cache_clear()


def test_submit_uploads_a_file_and_names_it(
    shell: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes("png", (256, 192)))
    status = main(["submit", "--model", CUTOUT, "--image", str(photo), "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    record = json.loads(out.out)
    assert record["model_id"] == CUTOUT
    image = record["request"]["image"]
    assert image.startswith(f"s3://{BUCKET}/uploads/_/")
    stored = shell.s3().get_object(Bucket=BUCKET, Key=image.split("/", 3)[3])["Body"].read()
    assert stored == photo.read_bytes()


def test_upload_prints_the_reference_a_job_takes(
    shell: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(image_bytes("jpeg", (128, 128)))
    assert main(["upload", str(photo), "--tenant", "acme"]) == 0
    reference = capsys.readouterr().out.strip()
    assert reference.startswith(f"s3://{BUCKET}/uploads/acme/")
    assert reference.endswith(".jpg")
    # That tenant's job may name it.
    status = main(["submit", "--model-id", CUTOUT, "--image", reference, "--tenant", "acme"])
    assert status == 0, capsys.readouterr().err


def test_a_missing_file_or_a_non_image_is_named(
    shell: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    missing = tmp_path / "missing.png"
    status = main(["submit", "--model", TRANSFER, "--image", str(missing), "--image", str(notes)])
    err = capsys.readouterr().err
    assert status == 2
    assert f"request.init_image: {missing}: cannot be read (No such file or directory)" in err
    assert f"request.style_image: {notes}: is not a PNG, JPEG or WebP image" in err
    assert shell.list_jobs().jobs == []


def test_a_bad_param_exits_2_naming_the_field(
    shell: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["submit", "a harbour", "--model", CUTOUT])
    out = capsys.readouterr()
    assert status == 2
    assert out.out == ""
    assert "request.prompt: Remove Background" in out.err
    assert "its fields: image, output_format" in out.err


def test_chain_steps_take_the_previous_image(
    shell: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["chain", "--step", CORE, "prompt=a red apple", "seed=4", "--step", CUTOUT])
    out = capsys.readouterr()
    assert status == 0, out.err
    chain = shell.chain(out.out.strip())
    first, second = (shell.get(step.job_id) for step in chain.steps)
    assert first.request is not None
    assert first.request.fixed_seed == 4
    assert second.request is not None
    assert second.request.image_inputs() == {"image": f"job:{first.job_id}"}


def test_chain_errors_name_the_step(shell: Client, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["chain", "--step", CORE, "prompt=a", "--step", CUTOUT, "seed=1"])
    assert status == 2
    assert "steps[1].request.seed: Remove Background" in capsys.readouterr().err


def test_the_progress_line_has_counts_elapsed_and_eta() -> None:
    assert render(0, 4, 0, 3.0) == f"[{'-' * 30}] 0/4 done, 0:03 elapsed"
    line = render(1, 4, 1, 10.0, note="2 running")
    assert line == (
        f"[{'#' * 7}{'-' * 23}] 1/4 done, 1 without an image, 2 running, 0:10 elapsed, ETA 0:30"
    )
    assert render(4, 4, 0, 75.0).endswith("4/4 done, 1:15 elapsed")
    assert render(0, 1, 0, 0.0, note="queued, position 3", eta_s=12.0).endswith("ETA 0:12")


def test_the_bar_redraws_in_place_on_a_terminal_and_logs_changes_elsewhere() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    terminal = io.StringIO()
    bar = ProgressBar(2, stream=terminal, interactive=True, clock=lambda: next(ticks))
    bar.update(0)
    bar.update(1)
    bar.close()
    assert terminal.getvalue().count("\r") == 2
    assert terminal.getvalue().endswith("1/2 done, 0:02 elapsed, ETA 0:02\n")

    log = io.StringIO()
    bar = ProgressBar(2, stream=log, interactive=False, clock=lambda: 0.0)
    for done in (0, 0, 1, 1, 2):
        bar.update(done)
    assert [line.split("] ")[1].split(",")[0] for line in log.getvalue().splitlines()] == [
        "0/2 done",
        "1/2 done",
        "2/2 done",
    ]


def test_models_shows_one_models_fields_as_param_takes_them(
    shell: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", OUTPAINT, "--json"]) == 0
    fields = {f["field"]: f for f in json.loads(capsys.readouterr().out)["fields"]}
    assert fields["image"] == {
        "field": "image",
        "required": True,
        "default": None,
        "type": "input image",
    }
    assert fields["left"]["type"] == "whole number 0 to 2000"
    assert fields["creativity"]["type"] == "number 0 to 1"
    assert fields["seed"]["type"] == "whole number 0 to 4294967295"
    assert main(["models", CUTOUT]) == 0
    table = capsys.readouterr().out
    assert "one of png, webp" in table  # this model's own formats
    assert main(["models", "stability.no-such-model"]) == 4
    assert "not a model of the registry" in capsys.readouterr().err
