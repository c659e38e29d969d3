"""A model's request from the shell: ``--param key=value`` typed from the model registry,
``--request JSON|@file``, and input images as ``--image [FIELD=]FILE|s3://...|job:ID``.

Only the fields the caller gave are sent: every other one takes the model's own default. Each
value is converted as the model's request schema types it (whole numbers, numbers, one of a
list), and a field the model does not have is refused with the model's fields listed. Local
files are not read here: they are returned as ``LocalImage`` for the caller to upload.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from imagegen.errors import FieldError, InvalidRequestError
from imagegen.models import model_for, request_type_for
from imagegen.requests import ModelRequest

__all__ = [
    "LocalImage",
    "RequestParts",
    "build_request",
    "describe_fields",
    "field_names",
    "read_json_argument",
    "split_assignment",
]

_REFERENCE_PREFIXES = ("s3://", "job:")


@dataclass(frozen=True)
class LocalImage:
    """A file named as an input image: uploaded before the job is submitted."""

    path: Path


ImageValue = str | dict[str, int] | LocalImage


@dataclass(frozen=True)
class RequestParts:
    """What the shell said about one request, before it is typed."""

    base: Mapping[str, Any] | None = None  # --request
    fields: Mapping[str, str | None] | None = None  # the shortcut flags (--seed ...), as given
    params: Sequence[str] = ()  # --param key=value
    images: Sequence[str] = ()  # --image [FIELD=]REF


def field_names(request_type: type[ModelRequest]) -> list[str]:
    return list(request_type.model_fields)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _kind_of(schema: Mapping[str, Any]) -> str:
    """A field's type in words, from its JSON Schema (the first of a union with null)."""
    options = [o for o in schema.get("anyOf", [schema]) if o.get("type") != "null"]
    first = options[0] if options else schema
    if "const" in first:
        return f"only {first['const']}"
    if "enum" in first:
        return "one of " + ", ".join(map(str, first["enum"]))
    low = first.get("minimum", first.get("ge"))
    high = first.get("maximum", first.get("le"))
    bounds = f" {_number(low)} to {_number(high)}" if low is not None and high is not None else ""
    words = {"integer": "whole number", "number": "number", "string": "text"}
    return words.get(str(first.get("type")), "value") + bounds


def describe_fields(model_id: str) -> list[dict[str, Any]]:
    """Each request field of the model: its name, type in words, whether it is required and
    its default (what ``imagegen models MODEL`` shows)."""
    request_type = request_type_for(model_id)
    schema = request_type.model_json_schema()
    required = set(schema.get("required", []))
    found = []
    for name, prop in schema["properties"].items():
        kind = "input image" if name in request_type.IMAGE_FIELDS else _kind_of(prop)
        if name == "output_format":
            kind = "one of " + ", ".join(request_type.FORMATS)
        found.append(
            {
                "field": name,
                "required": name in required,
                "default": prop.get("default"),
                "type": kind,
            }
        )
    return found


def _model_label(model_id: str) -> str:
    model = model_for(model_id)
    return f"{model.name} ({model_id})" if model else model_id


def _unknown(model_id: str, request_type: type[ModelRequest], name: str) -> FieldError:
    fields = ", ".join(field_names(request_type))
    return FieldError(
        f"request.{name}", f"{_model_label(model_id)} has no field {name!r}; its fields: {fields}"
    )


def split_assignment(text: str, flag: str) -> tuple[str, str]:
    """``key=value`` as (key, value); anything else is a clear error naming the flag."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidRequestError([FieldError(flag, f"{text!r} is not key=value")])
    return key.strip(), value


def read_json_argument(text: str, flag: str) -> Any:
    """A JSON document given inline or as ``@file``."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text()
        except OSError as e:
            raise InvalidRequestError([FieldError(flag, f"cannot read {path}: {e}")]) from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidRequestError([FieldError(flag, f"not JSON: {e}")]) from e


def _base_type(annotation: Any) -> Any:
    """The type under Optional, Annotated and unions with None."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            kept = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(kept) != 1:
                return annotation
            annotation = kept[0]
        else:
            return annotation


def typed_value(request_type: type[ModelRequest], name: str, text: str) -> Any:
    """``text`` as the request schema types field ``name``; ValueError says what it must be."""
    kind = _base_type(request_type.model_fields[name].annotation)
    if get_origin(kind) is Literal:
        # A model may return fewer formats than the field's type names.
        choices = [
            str(c) for c in get_args(kind) if name != "output_format" or c in request_type.FORMATS
        ]
        if text not in choices:
            msg = f"{text!r} is not one of {', '.join(choices)}"
            raise ValueError(msg)
        return text
    if kind is int:
        try:
            return int(text)
        except ValueError:
            msg = f"{text!r} is not a whole number"
            raise ValueError(msg) from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            msg = f"{text!r} is not a number"
            raise ValueError(msg) from None
    return text


def image_value(text: str) -> ImageValue:
    """An input image as the shell names it: an S3 URI or ``job:ID`` as it is, ``step:N`` (in
    a chain) as ``{"step": N}``, anything else a local file."""
    if text.startswith(_REFERENCE_PREFIXES):
        return text
    if text.startswith("step:") and text.removeprefix("step:").isdigit():
        return {"step": int(text.removeprefix("step:"))}
    return LocalImage(Path(text).expanduser())


def build_request(model_id: str, parts: RequestParts) -> dict[str, Any]:
    """The request to send: ``--request`` first, then the shortcut flags, ``--param`` and
    ``--image`` over it. Raises ``InvalidRequestError`` naming every bad field at once."""
    request_type = request_type_for(model_id)
    known = request_type.model_fields
    image_fields = request_type.IMAGE_FIELDS
    request: dict[str, Any] = dict(parts.base or {})
    errors: list[FieldError] = []
    assigned = [(name, value) for name, value in (parts.fields or {}).items() if value is not None]
    for item in parts.params:
        try:
            assigned.append(split_assignment(item, "--param"))
        except InvalidRequestError as e:
            errors += e.errors
    for name, text in assigned:
        if name not in known:
            errors.append(_unknown(model_id, request_type, name))
        elif name in image_fields:
            request[name] = image_value(text)
        else:
            try:
                request[name] = typed_value(request_type, name, text)
            except ValueError as e:
                errors.append(FieldError(f"request.{name}", str(e)))
    errors += _place_images(model_id, request_type, parts.images, request)
    if errors:
        raise InvalidRequestError(errors)
    return request


def _place_images(
    model_id: str,
    request_type: type[ModelRequest],
    images: Sequence[str],
    request: dict[str, Any],
) -> list[FieldError]:
    """Each ``--image``: into the field it names (``mask=FILE``), else into the model's next
    image field not given yet, in the order the model lists them."""
    image_fields = request_type.IMAGE_FIELDS
    errors: list[FieldError] = []
    for text in images:
        name, sep, ref = text.partition("=")
        if sep and name in image_fields:
            request[name] = image_value(ref)
            continue
        free = [field for field in image_fields if field not in request]
        if not image_fields:
            fields = ", ".join(field_names(request_type))
            errors.append(
                FieldError(
                    "--image",
                    f"{_model_label(model_id)} takes no input image; its fields: {fields}",
                )
            )
        elif not free:
            errors.append(
                FieldError(
                    "--image",
                    f"{text!r}: every input image of {_model_label(model_id)} is given "
                    f"({', '.join(image_fields)})",
                )
            )
        else:
            request[free[0]] = image_value(text)
    return errors
