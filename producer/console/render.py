"""Rendering the console's pages: one Jinja environment (autoescaped), and the filters the
templates share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

__all__ = ["page"]

_ENV = Environment(
    loader=PackageLoader("producer.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.2f}"


def _percent(part: float, whole: float) -> int:
    return 0 if whole <= 0 else max(0, min(100, round(100 * part / whole)))


_ENV.filters["iso"] = _iso
_ENV.filters["money"] = _money
_ENV.globals["percent"] = _percent


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The rendered template as an HTML response that no cache keeps."""
    html = _ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
