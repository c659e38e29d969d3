"""Rendering the console's pages: one Jinja environment (autoescaped), and the filters the
templates share.

Every ``<form method="post">`` of every template gets the browser's form token as its first
input (``FormTokens``), so no state-changing form can be written without one."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from jinja2.ext import Extension

from producer.console.csrf import csrf_input, page_tag

__all__ = ["POST_FORM", "page"]

# The opening tag of a form that posts, in a template's source.
POST_FORM = re.compile(r"""<form\b[^>]*\bmethod=["']?post\b[^>]*>""", re.IGNORECASE)


class FormTokens(Extension):
    """Adds ``{{ csrf_input() }}`` after the opening tag of each posting form, as the template
    is compiled (its source is ours; what it renders never is)."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return POST_FORM.sub(lambda tag: tag.group(0) + "{{ csrf_input() }}", source)


_ENV = Environment(
    loader=PackageLoader("producer.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=[FormTokens],
)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _ms(value: datetime | None) -> int:
    return round(value.timestamp() * 1000) if value else 0


def _age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, roughly (``static/console.js`` keeps it current in the browser)."""
    if value is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - value).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now" if seconds < 10 else f"{seconds} s ago"


def _prompt(job: Any) -> str:
    request = getattr(job, "request", None)
    return str(request.prompt_text) if request is not None else ""


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _percent(part: float, whole: float) -> int:
    return 0 if whole <= 0 else max(0, min(100, round(100 * part / whole)))


_ENV.filters["iso"] = _iso
_ENV.filters["money"] = _money
_ENV.filters["ms"] = _ms
_ENV.filters["age"] = _age
_ENV.filters["prompt"] = _prompt
_ENV.globals["percent"] = _percent
_ENV.globals["csrf_input"] = csrf_input
_ENV.globals["page_tag"] = page_tag


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The rendered template as an HTML response that no cache keeps."""
    html = _ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
