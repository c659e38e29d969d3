"""The job contract: what a caller may ask Stable Image Core for, checked before anything is queued.

``GenerationRequest`` is the InvokeModel body with the model's documented rules. It also accepts
the older SDXL form ``text_prompts: [{"text", "weight"}]`` (the model documentation lists it as
required while its own examples send ``prompt``) and normalises it: positive weights make the
prompt, negative weights the negative prompt.

``JobSpec`` is the envelope around it: job id, model id, caller metadata, priority.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from imagegen.errors import FieldError, InvalidRequestError
from imagegen.ids import JOB_ID_PATTERN
from imagegen.ssrf import parse_webhook_url
from imagegen.storable import storable_problem, storable_text

__all__ = [
    "ASPECT_RATIOS",
    "BUDGET_WARNING_EVENT",
    "DEFAULT_EVENTS",
    "EVENT_TYPES",
    "IMAGE_SIZES",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "PRIORITIES",
    "EventType",
    "GenerationRequest",
    "JobSpec",
    "Priority",
    "TextPrompt",
    "validation_errors",
]

MAX_PROMPT_CHARS = 10_000
MAX_SEED = 4_294_967_295
DEFAULT_METADATA_MAX_BYTES = 2048

EventType = Literal[
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.filtered",
    "job.canceled",
    "job.expired",
    "job.budget_exceeded",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
# A tenant's event, sent to its webhook when a release first takes its spend past a soft budget.
BUDGET_WARNING_EVENT = "tenant.budget_warning"
# Every event but job.started, which most receivers do not want.
DEFAULT_EVENTS: tuple[str, ...] = tuple(e for e in EVENT_TYPES if e != "job.started")

AspectRatio = Literal["16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"]
OutputFormat = Literal["png", "jpeg", "webp"]
Priority = Literal["interactive", "batch"]

ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
PRIORITIES: tuple[str, ...] = get_args(Priority)
# Stable Image Core's documented output sizes (width, height). Informative only: the worker
# reads the real size from the returned image.
IMAGE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "5:4": (1088, 896),
    "4:5": (896, 1088),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}

# Text a record can hold: UTF-8 can carry it (JSON lets lone surrogates through).
StorableText = Annotated[str, AfterValidator(storable_text)]
PromptText = Annotated[StorableText, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)]


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 42.0 is the integer 42 (but true is not 1, nor "42" 42)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class TextPrompt(BaseModel):
    """One entry of the SDXL-style ``text_prompts`` list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: PromptText
    weight: float = 1.0


class GenerationRequest(BaseModel):
    """A Stable Image Core text-to-image request (the InvokeModel body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: PromptText
    negative_prompt: (
        Annotated[StorableText, StringConstraints(max_length=MAX_PROMPT_CHARS)] | None
    ) = None
    aspect_ratio: AspectRatio = "1:1"
    output_format: OutputFormat = "png"
    seed: Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_SEED, strict=True)] = 0
    mode: Literal["text-to-image"] = "text-to-image"

    @model_validator(mode="before")
    @classmethod
    def _normalise_text_prompts(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "text_prompts" not in data:
            return data
        data = dict(data)
        raw = data.pop("text_prompts")
        if "prompt" in data:
            msg = "give either prompt or text_prompts, not both"
            raise ValueError(msg)
        if not isinstance(raw, list) or not raw:
            msg = "text_prompts must be a non-empty list of {text, weight} objects"
            raise ValueError(msg)
        prompts = [_text_prompt(index, item) for index, item in enumerate(raw)]
        positive = [p.text for p in prompts if p.weight >= 0]
        negative = [p.text for p in prompts if p.weight < 0]
        if not positive:
            msg = "text_prompts needs at least one entry with a weight >= 0"
            raise ValueError(msg)
        if negative and data.get("negative_prompt"):
            msg = "give negative_prompt or negative-weight text_prompts, not both"
            raise ValueError(msg)
        data["prompt"] = " ".join(positive)
        if negative:
            data["negative_prompt"] = ", ".join(negative)
        return data

    def to_bedrock_body(self) -> dict[str, Any]:
        """The InvokeModel JSON body. Seed 0 is left out: Bedrock then picks one and reports it."""
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "aspect_ratio": self.aspect_ratio,
            "output_format": self.output_format,
        }
        if self.negative_prompt:
            body["negative_prompt"] = self.negative_prompt
        if self.seed:
            body["seed"] = self.seed
        return body


class JobSpec(BaseModel):
    """What a caller submits: the request plus the envelope the service keeps around it.

    Validate with ``JobSpec.parse(data, **context)``; the context may carry
    ``allowed_model_ids``, ``metadata_max_bytes`` and ``webhook_allow_http`` from the
    settings. Validation is pure: where a webhook URL leads (DNS) is checked by the submitter
    (``imagegen.ssrf.vet_webhook_url``), once per distinct URL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: GenerationRequest
    job_id: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)] | None = None
    model_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "interactive"
    webhook_url: StorableText | None = None
    webhook_events: list[EventType] | None = Field(default=None, min_length=1)
    expires_at: AwareDatetime | None = None

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value <= datetime.now(UTC):
            msg = "is in the past"
            raise ValueError(msg)
        return value

    @field_validator("webhook_url")
    @classmethod
    def _safe_webhook(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        context = info.context or {}
        parse_webhook_url(value, allow_http=context.get("webhook_allow_http", False))
        return value

    @property
    def events(self) -> tuple[str, ...]:
        """The events this job's webhook receives."""
        return tuple(self.webhook_events) if self.webhook_events else DEFAULT_EVENTS

    @field_validator("model_id")
    @classmethod
    def _known_model(cls, value: str | None, info: ValidationInfo) -> str | None:
        allowed = (info.context or {}).get("allowed_model_ids")
        if value is not None and allowed is not None and value not in allowed:
            msg = f"must be one of {', '.join(allowed)}"
            raise ValueError(msg)
        return value

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        limit = (info.context or {}).get("metadata_max_bytes", DEFAULT_METADATA_MAX_BYTES)
        problem = storable_problem(value)
        if problem is not None:
            raise ValueError(problem)
        try:
            size = len(json.dumps(value, separators=(",", ":")).encode())
        except (TypeError, ValueError) as e:
            msg = f"must be a JSON object ({e})"
            raise ValueError(msg) from e
        if size > limit:
            msg = f"is {size} bytes as JSON; the limit is {limit}"
            raise ValueError(msg)
        return value

    @classmethod
    def parse(cls, data: Any, **context: Any) -> Self:
        """Validate ``data``; on failure raise ``InvalidRequestError`` naming every bad field."""
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as e:
            raise InvalidRequestError(validation_errors(e)) from e


def _text_prompt(index: int, item: Any) -> TextPrompt:
    try:
        return TextPrompt.model_validate(item)
    except ValidationError as e:
        first = validation_errors(e)[0]
        msg = f"text_prompts[{index}].{first.field}: {first.message}"
        raise ValueError(msg) from None


def validation_errors(error: ValidationError) -> list[FieldError]:
    """pydantic's errors as (dotted field path, message) pairs."""
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        found.append(FieldError(field=path, message=message))
    return found
