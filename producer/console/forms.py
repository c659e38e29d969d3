"""The console's submit form: each model's fields, read from its request class in the registry,
and a submitted form turned back into a job the client validates like any other.

Form inputs are named ``f.<field>`` (a value), ``file.<field>`` (an uploaded image) and
``pick.<field>`` (a previous job whose output to use); only the chosen model's fields are read.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Le
from pydantic.fields import FieldInfo

from imagegen.errors import FieldError
from imagegen.models import request_type_for

__all__ = ["FormField", "model_form", "read_form"]

FieldKind = Literal["textarea", "text", "integer", "number", "select", "image"]
_LONG_TEXT = {"prompt", "negative_prompt"}


@dataclass(frozen=True)
class FormField:
    """One input of a model's form."""

    name: str
    kind: FieldKind
    required: bool
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    default: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def _unwrap(annotation: Any) -> Any:
    """``X | None`` is ``X``."""
    if get_origin(annotation) in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


def _form_field(name: str, info: FieldInfo, image_fields: tuple[str, ...]) -> FormField:
    required = info.is_required()
    if name in image_fields:
        return FormField(name, "image", required)
    annotation = _unwrap(info.annotation)
    default = "" if info.default in (None, 0) or required else str(info.default)
    if get_origin(annotation) is Literal:
        return FormField(
            name, "select", required, tuple(map(str, get_args(annotation))), default=default
        )
    low = next((float(m.ge) for m in info.metadata if isinstance(m, Ge)), None)  # type: ignore[arg-type]
    high = next((float(m.le) for m in info.metadata if isinstance(m, Le)), None)  # type: ignore[arg-type]
    if annotation is int:
        return FormField(name, "integer", required, low=low, high=high, default=default)
    if annotation is float:
        return FormField(name, "number", required, low=low, high=high, default=default)
    return FormField(name, "textarea" if name in _LONG_TEXT else "text", required)


def model_form(model_id: str) -> list[FormField]:
    """The inputs of ``model_id``'s form, in its request's field order."""
    request_type = request_type_for(model_id)
    return [
        _form_field(name, info, request_type.IMAGE_FIELDS)
        for name, info in request_type.model_fields.items()
    ]


def _number(kind: FieldKind, text: str) -> Any:
    """A number as the JSON API would get it; text that is not one stays text, so the
    contract's error names the field."""
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        return text


def read_form(
    model_id: str,
    form: Mapping[str, Any],
    upload: Callable[[str, bytes, str | None], str],
) -> tuple[dict[str, Any], list[FieldError]]:
    """The request a submitted form asks for, and the errors of images that could not be
    stored. ``upload(field, data, content type)`` stores an uploaded image and returns its S3
    URI (raising ``ValueError`` with the reason)."""
    request: dict[str, Any] = {}
    errors: list[FieldError] = []
    for field in model_form(model_id):
        if field.kind == "image":
            file = form.get(f"file.{field.name}")
            picked = str(form.get(f"pick.{field.name}") or "").strip()
            data = file_bytes(file)
            if data:
                try:
                    request[field.name] = upload(field.name, data, content_type(file))
                except ValueError as e:
                    errors.append(FieldError(f"request.{field.name}", str(e)))
            elif picked:
                request[field.name] = {"job": picked}
            continue
        text = str(form.get(f"f.{field.name}") or "").strip()
        if not text:
            continue
        request[field.name] = (
            _number(field.kind, text) if field.kind in {"integer", "number"} else text
        )
    return request, errors


def file_bytes(file: Any) -> bytes:
    """The bytes of an uploaded file (Starlette's ``UploadFile``), or b''."""
    read = getattr(getattr(file, "file", None), "read", None)
    return bytes(read()) if read else b""


def content_type(file: Any) -> str | None:
    return getattr(file, "content_type", None)
