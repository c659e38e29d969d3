"""The job contract: what a caller may ask a model for, checked before anything is queued.

``JobSpec`` is the envelope (job id, model id, caller metadata, priority, webhook, deadline)
around a request, which is checked against its model's own schema from the registry
(``imagegen.models``, ``imagegen.requests``): ``GenerationRequest`` for Stable Image Core and
Ultra, and one class per shape for SD3.5 and the Image Services.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from imagegen.errors import FieldError, ImagegenError, InvalidRequestError
from imagegen.ids import JOB_ID_PATTERN
from imagegen.models import request_type_for
from imagegen.requests import (
    ASPECT_RATIOS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    OUTPUT_FORMATS,
    AnyModelRequest,
    GenerationRequest,
    ModelRequest,
    StorableText,
    TextPrompt,
    validation_errors,
)
from imagegen.ssrf import parse_webhook_url
from imagegen.storable import storable_problem

__all__ = [
    "ASPECT_RATIOS",
    "BUDGET_WARNING_EVENT",
    "CHAIN_EVENTS",
    "DEFAULT_EVENTS",
    "EVENT_TYPES",
    "IMAGE_SIZES",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "PRIORITIES",
    "AnyModelRequest",
    "EventType",
    "GenerationRequest",
    "JobSpec",
    "ModelRequest",
    "Priority",
    "TextPrompt",
    "validation_errors",
]

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
# A chain's end, sent with its last step's webhook once every step is final.
CHAIN_EVENTS: tuple[str, ...] = ("chain.succeeded", "chain.failed")
# A tenant's event, sent to its webhook when a release first takes its spend past a soft budget.
BUDGET_WARNING_EVENT = "tenant.budget_warning"
# Every event but job.started, which most receivers do not want.
DEFAULT_EVENTS: tuple[str, ...] = tuple(e for e in EVENT_TYPES if e != "job.started")

Priority = Literal["interactive", "batch"]
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


class JobSpec(BaseModel):
    """What a caller submits: the request plus the envelope the service keeps around it.

    Validate with ``JobSpec.parse(data, **context)``; the context may carry
    ``allowed_model_ids``, ``metadata_max_bytes`` and ``webhook_allow_http`` from the
    settings. Validation is pure: where a webhook URL leads (DNS) is checked by the submitter
    (``imagegen.ssrf.vet_webhook_url``), once per distinct URL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: AnyModelRequest
    job_id: Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)] | None = None
    model_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "interactive"
    webhook_url: StorableText | None = None
    webhook_events: list[EventType] | None = Field(default=None, min_length=1)
    expires_at: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _request_of_its_model(cls, data: Any, info: ValidationInfo) -> Any:
        """The request is checked against its model's own schema (the registry's)."""
        if not isinstance(data, dict) or isinstance(data.get("request"), ModelRequest):
            return data
        model_id = data.get("model_id")
        if not isinstance(model_id, str):
            model_id = (info.context or {}).get("default_model_id")
        raw = data.get("request")
        if not isinstance(raw, dict):
            return data
        try:
            request = request_type_for(model_id).model_validate(raw, context=info.context)
        except ValidationError as e:
            # Not a ValueError, so pydantic lets it through with every field named.
            raise _RequestRefusedError(validation_errors(e)) from e
        return {**data, "request": request}

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
        """Validate ``data``; on failure raise ``InvalidRequestError`` naming every bad field
        (those of the request, checked against its model's schema, and of the envelope)."""
        try:
            return cls.model_validate(data, context=context)
        except ValidationError as e:
            raise InvalidRequestError(validation_errors(e)) from e
        except _RequestRefusedError as refused:
            errors = [
                FieldError(
                    "request" if item.field == "body" else f"request.{item.field}", item.message
                )
                for item in refused.errors
            ]
            try:  # the envelope's own errors, named beside the request's
                cls.model_validate({**data, "request": _PLACEHOLDER_REQUEST}, context=context)
            except ValidationError as e:
                errors += validation_errors(e)
            raise InvalidRequestError(errors) from refused


# Stands in for a refused request while the envelope's own fields are checked.
_PLACEHOLDER_REQUEST = GenerationRequest(prompt="-")


class _RequestRefusedError(ImagegenError):
    """The request broke its model's rules (raised inside validation, caught by ``parse``)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors
