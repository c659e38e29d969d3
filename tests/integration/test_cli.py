"""``imagegen`` from a shell, against the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from devstack.stack import Stack
from imagegen.models import MODELS, ImageModel
from producer.operator import OperatorClient
from tests.support import image_bytes

pytestmark = pytest.mark.integration

CORE = "stability.stable-image-core-v1:0"
CUTOUT = "us.stability.stable-image-remove-background-v1:0"
FAST_UPSCALE = "us.stability.stable-fast-upscale-v1:0"
# What a model needs beyond its required fields (its schema's rules, or Bedrock's: Inpaint and
# Erase Object need a mask or transparent pixels), as it is typed; {photo} is the input image.
EXTRA_ARGS = {
    "us.stability.stable-image-search-replace-v1:0": ["--param", "search_prompt=a boat"],
    "us.stability.stable-image-search-recolor-v1:0": ["--param", "select_prompt=the boat"],
    "us.stability.stable-outpaint-v1:0": ["--param", "left=64"],
    "us.stability.stable-image-inpaint-v1:0": ["--image", "mask={photo}"],
    "us.stability.stable-image-erase-object-v1:0": ["--image", "mask={photo}"],
}


def imagegen(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        env={**stack.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def submit_args(model: ImageModel, photo: Path, output: Path) -> list[str]:
    """``imagegen submit`` for ``model`` with what it needs, as a user would type it."""
    described = model.describe()
    args = ["submit", "--model", model.model_id, "--wait", "--output", str(output), "--json"]
    if "prompt" in described["required"]:
        args.insert(1, "a harbour at dusk")
    for field in described["input_images"]:
        if field in described["required"]:
            args += ["--image", f"{field}={photo}"]
    return args + [arg.format(photo=photo) for arg in EXTRA_ARGS.get(model.model_id, [])]


def test_submit_runs_every_model_of_the_registry(stack: Stack, tmp_path: Path) -> None:
    photo = tmp_path / "harbour.png"
    photo.write_bytes(image_bytes("png", (256, 192)))
    running = {
        model_id: subprocess.Popen(
            [sys.executable, "-m", "producer.cli", *submit_args(model, photo, tmp_path / f"{n}")],
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, (model_id, model) in enumerate(MODELS.items())
    }
    assert len(running) == 18
    finished = {model_id: p.communicate(timeout=120) for model_id, p in running.items()}
    for n, (model_id, (out, err)) in enumerate(finished.items()):
        assert running[model_id].returncode == 0, f"{model_id}: {out} {err}"
        record = json.loads(out)
        assert (record["model_id"], record["status"]) == (model_id, "succeeded")
        assert "1/1 done" in err  # the progress line
        for field in MODELS[model_id].describe()["input_images"]:
            if field in MODELS[model_id].describe()["required"]:
                assert record["request"][field].startswith("s3://")  # the file, uploaded
        with Image.open(tmp_path / f"{n}") as image:
            assert image.size == (record["width"], record["height"])


def test_the_issues_remove_background_call_names_the_field_and_the_models_fields(
    stack: Stack,
) -> None:
    done = imagegen(stack, "submit", "a harbour", "--model-id", CUTOUT)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "imagegen: request.prompt: Remove Background (us.stability.stable-image-remove-"
        "background-v1:0) has no field 'prompt'; its fields: image, output_format"
    ]
    bad = imagegen(stack, "submit", "a", "--param", "aspect_ratio=4:7", "--param", "seed=x")
    assert bad.returncode == 2
    assert "request.aspect_ratio: '4:7' is not one of 16:9, 1:1," in bad.stderr
    assert "request.seed: 'x' is not a whole number" in bad.stderr


def test_a_chain_from_the_shell_ends_in_its_last_steps_image(stack: Stack, tmp_path: Path) -> None:
    final = tmp_path / "final.png"
    done = imagegen(
        stack,
        "chain",
        "--step",
        CORE,
        "prompt=a red apple",
        "aspect_ratio=1:1",
        "--step",
        CUTOUT,
        "--step",
        FAST_UPSCALE,
        "--wait",
        "--output",
        str(final),
    )
    assert done.returncode == 0, done.stderr
    assert "3/3 done" in done.stderr
    assert " succeeded" in done.stdout.splitlines()[-1]
    with Image.open(final) as image:
        assert image.size == (4096, 4096)  # 1024x1024, cut out, upscaled 4x


def test_wait_follows_a_batch_and_saves_its_images(stack: Stack, tmp_path: Path) -> None:
    lines = tmp_path / "prompts.jsonl"
    lines.write_text("a pier\n" + json.dumps({"prompt": "a buoy", "aspect_ratio": "16:9"}) + "\n")
    queued = imagegen(stack, "batch", str(lines))
    assert queued.returncode == 0, queued.stderr
    batch_id = queued.stdout.strip()
    done = imagegen(stack, "wait", batch_id, "--output", str(tmp_path / "images"))
    assert done.returncode == 0, done.stderr
    assert "2/2 done" in done.stderr
    sizes = set()
    for path in (tmp_path / "images").iterdir():
        with Image.open(path) as image:
            sizes.add(image.size)
    assert sizes == {(1024, 1024), (1344, 768)}
    status = imagegen(stack, "status", batch_id, "--json")
    assert json.loads(status.stdout) == {"batch_id": batch_id, "counts": {"succeeded": 2}}


@pytest.fixture(scope="module")
def api_env(stack: Stack) -> dict[str, str]:
    """What a shell with nothing but the API's URL and a key has."""
    url = stack.urls.get("api") or stack.start_api()
    with OperatorClient(stack.settings()) as operator:
        _, key = operator.api_keys.create("cli-over-http")
    return {"PATH": "/usr/bin:/bin", "IMAGEGEN_API_KEY": key, "API": url}


def over_api(api_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args, "--api", api_env["API"]],
        env={name: value for name, value in api_env.items() if name != "API"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_over_the_api_a_file_is_uploaded_and_the_job_followed(
    api_env: dict[str, str], tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(image_bytes("png", (320, 192)))
    reference = over_api(api_env, "upload", str(photo))
    assert reference.returncode == 0, reference.stderr
    assert "/uploads/cli-over-http/" in reference.stdout
    cut_out = tmp_path / "cut-out.png"
    done = over_api(
        api_env,
        "submit",
        "--model",
        CUTOUT,
        "--image",
        str(photo),
        "--param",
        "output_format=webp",
        "--wait",
        "--output",
        str(cut_out),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["status"], job["url"]) == ("succeeded", f"/v1/jobs/{job['job_id']}")
    assert job["request"]["image"].startswith("s3://")
    with Image.open(cut_out) as image:
        assert (image.format, image.size) == ("WEBP", (320, 192))
    assert over_api(api_env, "status", job["job_id"]).stdout.startswith(job["job_id"])


def test_over_the_api_wait_follows_a_chain_and_a_batch_and_bad_input_names_the_field(
    api_env: dict[str, str], tmp_path: Path
) -> None:
    queued = over_api(api_env, "chain", "--step", CORE, "prompt=a pear", "--step", CUTOUT)
    assert queued.returncode == 0, queued.stderr
    chain_id = queued.stdout.strip()
    waited = over_api(api_env, "wait", chain_id, "--json")
    assert waited.returncode == 0, waited.stderr
    assert "2/2 done" in waited.stderr
    assert json.loads(waited.stdout)["status"] == "succeeded"
    shown = over_api(api_env, "status", chain_id)
    assert f"chain {chain_id} succeeded" in shown.stdout

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("a gull\na kite\n")
    batch_id = over_api(api_env, "batch", str(prompts)).stdout.strip()
    saved = over_api(api_env, "wait", batch_id, "--output", str(tmp_path / "batch"))
    assert saved.returncode == 0, saved.stderr
    assert "2/2 done" in saved.stderr
    assert len(list((tmp_path / "batch").iterdir())) == 2

    refused = over_api(api_env, "submit", "a", "--param", "seed=-1")
    assert refused.returncode == 2
    assert "request.seed" in refused.stderr  # the API's own check, field by field
    tenant = over_api(api_env, "submit", "a", "--tenant", "other")
    assert (tenant.returncode, "--tenant" in tenant.stderr) == (2, True)
    unknown = over_api(api_env, "wait", "01M96WWBY8M5VCJF5PEM2VGW2F")
    assert unknown.returncode == 4


def test_over_the_api_without_a_key_or_an_answer_is_a_clear_error(
    api_env: dict[str, str],
) -> None:
    no_key = subprocess.run(
        [sys.executable, "-m", "producer.cli", "status", "x", "--api", api_env["API"]],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert no_key.returncode == 2
    assert "IMAGEGEN_API_KEY" in no_key.stderr
    bad_key = over_api({**api_env, "IMAGEGEN_API_KEY": "nope"}, "status", "x")
    assert bad_key.returncode == 2
    assert "401" in bad_key.stderr
    gone = over_api({**api_env, "API": "http://127.0.0.1:9"}, "status", "x")
    assert gone.returncode == 5
    assert "the API at http://127.0.0.1:9 is not reachable" in gone.stderr


def test_submit_wait_json_prints_one_record_and_saves_the_image(
    stack: Stack, tmp_path: Path
) -> None:
    target = tmp_path / "coffee.jpg"
    done = imagegen(
        stack,
        "submit",
        "Cozy coffee shop interior with warm lighting",
        "--aspect-ratio",
        "3:2",
        "--output-format",
        "jpeg",
        "--negative-prompt",
        "cluttered, dark, empty",
        "--seed",
        "7",
        "--wait",
        "--output",
        str(target),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # exactly one JSON document, nothing else
    assert record["status"] == "succeeded"
    assert record["seed"] == 7
    assert record["request"]["negative_prompt"] == "cluttered, dark, empty"
    with Image.open(target) as image:
        assert (image.format, image.size) == ("JPEG", (1216, 832))

    status = imagegen(stack, "status", record["job_id"], "--json")
    assert json.loads(status.stdout) == record
    human = imagegen(stack, "status", record["job_id"])
    assert record["job_id"] in human.stdout
    assert "succeeded" in human.stdout
    assert "cost=$0.04" in human.stdout  # one Core image


def test_submit_without_wait_returns_a_queued_job_that_wait_follows(stack: Stack) -> None:
    queued = json.loads(imagegen(stack, "submit", "a windmill", "--json").stdout)
    assert queued["status"] == "queued"
    waited = imagegen(stack, "wait", queued["job_id"], "--json")
    assert waited.returncode == 0
    assert json.loads(waited.stdout)["status"] == "succeeded"


def test_bad_input_names_the_field_and_exits_2(stack: Stack) -> None:
    done = imagegen(stack, "submit", "a", "--seed", "-5", "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "request.seed" in done.stderr


def test_a_filtered_job_exits_1(stack: Stack) -> None:
    done = imagegen(stack, "submit", "forbidden fruit", "--wait")
    assert done.returncode == 1
    assert "filtered" in done.stdout


def test_unknown_job_exits_4(stack: Stack) -> None:
    done = imagegen(stack, "status", "01NOSUCHJOB")
    assert done.returncode == 4
    assert "not found" in done.stderr


def test_unreachable_redis_is_a_clear_error(stack: Stack) -> None:
    done = imagegen(stack, "status", "x", env={"IMAGEGEN_REDIS_URL": "redis://127.0.0.1:9/0"})
    assert done.returncode == 5
    assert "redis://127.0.0.1:9/0" in done.stderr


def test_quota_shows_the_shared_rate_and_each_tenants_share(stack: Stack) -> None:
    core_model = "stability.stable-image-core-v1:0"
    assert imagegen(stack, "submit", "a quota check", "--tenant", "acme", "--wait").returncode == 0
    done = imagegen(stack, "quota", "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    core = next(q for q in found["quotas"] if q["model_id"] == core_model)
    assert core["configured_rpm"] == 6000
    assert core["effective_rpm"] == 6000
    assert core["calls_last_minute"] >= 1
    acme = next(t for t in found["tenants"] if t["tenant"] == "acme")
    assert (acme["model_id"], acme["released_last_minute"]) == (core_model, 1)
    table = imagegen(stack, "quota")
    assert core_model in table.stdout
    assert "effective/min" in table.stdout
    assert "fair share" in table.stdout


def test_a_tenants_weight_and_caps_are_set_and_shown(stack: Stack) -> None:
    done = imagegen(stack, "tenants", "set", "acme", "--weight", "3", "--max-concurrency", "4")
    assert done.returncode == 0, done.stderr
    shown = json.loads(imagegen(stack, "tenants", "show", "acme", "--json").stdout)
    assert (shown["weight"], shown["max_concurrency"], shown["rate_rpm"]) == (3.0, 4, 0.0)
    bad = imagegen(stack, "tenants", "set", "acme", "--weight", "0")
    assert bad.returncode != 0
    assert "weight" in bad.stderr


def test_a_failed_job_is_listed_in_the_dlq_and_replayed(stack: Stack) -> None:
    unknown_model = "stability.stable-diffusion-xl-v1"  # allowed here, unknown to the emulator
    env_models = json.dumps(["stability.stable-image-core-v1:0", unknown_model])
    failed = imagegen(
        stack,
        "submit",
        "a doomed job",
        "--model-id",
        unknown_model,
        "--wait",
        "--json",
        env={"IMAGEGEN_ALLOWED_MODEL_IDS": env_models},
    )
    assert failed.returncode == 1
    record = json.loads(failed.stdout)
    assert (record["status"], record["error_code"]) == ("failed", "ResourceNotFoundException")

    listed = json.loads(imagegen(stack, "dlq", "list", "--json").stdout)
    assert record["job_id"] in [r["job_id"] for r in listed]

    replayed = imagegen(stack, "dlq", "replay", record["job_id"])
    assert replayed.returncode == 0
    assert replayed.stdout.split() == [record["job_id"]]
    again = json.loads(imagegen(stack, "wait", record["job_id"], "--json").stdout)
    assert (again["status"], again["replays"]) == ("failed", 1)

    nothing = imagegen(stack, "dlq", "replay", "01NOTFAILED")
    assert nothing.returncode == 4
    assert "not a failed job" in nothing.stderr


def test_budgets_and_spend_from_the_shell(stack: Stack) -> None:
    tenant = "spender"
    done = imagegen(stack, "budgets", "set", tenant, "--daily-hard", "0.04", "--on-exceed", "fail")
    assert done.returncode == 0, done.stderr
    assert "daily hard $0.04" in done.stdout
    bought = imagegen(stack, "submit", "first", "--tenant", tenant, "--wait", "--json")
    assert json.loads(bought.stdout)["cost_usd"] == 0.04
    refused = imagegen(stack, "submit", "second", "--tenant", tenant, "--wait", "--json")
    assert refused.returncode == 1  # ended without an image
    assert json.loads(refused.stdout)["status"] == "budget_exceeded"
    lines = imagegen(stack, "spend", "--tenant", tenant, "--csv").stdout.splitlines()
    assert lines[0] == "tenant,day,model_id,images,spend_usd,cache_hits,saved_usd"
    assert lines[1].startswith(f"{tenant},")
    assert lines[1].endswith(",1,0.040000,0,0.000000")
    shown = json.loads(imagegen(stack, "budgets", "show", tenant, "--json").stdout)
    assert (shown["today"]["spent_usd"], shown["today"]["reserved_usd"]) == (0.04, 0)
    assert shown["budget"]["on_exceed"] == "fail"
    bad = imagegen(stack, "budgets", "set", tenant, "--daily-hard", "-3")
    assert bad.returncode == 2


def test_doctor_passes_on_the_local_stack_and_models_lists_every_model(stack: Stack) -> None:
    done = imagegen(stack, "doctor", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses["s3 images"] == statuses["redis"] == "ok"
    # The workers' sweeper keeps the mark of Redis's epoch in S3, and Redis matches it.
    assert statuses["redis data loss"] == "ok"
    assert statuses["model us.stability.stable-image-remove-background-v1:0"] == "ok"
    models = json.loads(imagegen(stack, "models", "--json").stdout)["models"]
    assert len(models) == 18
    [upscale] = [m for m in models if m["model_id"] == "us.stability.stable-fast-upscale-v1:0"]
    assert (upscale["price_usd"], upscale["input_images"]) == (0.03, ["image"])


def test_doctor_fails_and_says_what_to_fix(stack: Stack) -> None:
    done = imagegen(stack, "doctor", env={"IMAGEGEN_S3_BUCKET": "no-such-bucket"})
    assert done.returncode == 1
    assert "does not exist" in done.stdout
    assert "To fix:" in done.stdout
    assert "IMAGEGEN_S3_BUCKET" in done.stdout
