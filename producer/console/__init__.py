"""The web console, served by the API process at ``/console``.

Server-rendered pages (Jinja, autoescaped) with one small script of our own
(``static/console.js``: live updates over server-sent events, the model's fields in the submit
form, the quota chart, times in the browser's zone). Nothing is built and nothing is loaded
from another host, so it works in a private network.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from producer.console import auth, operator, tenant

__all__ = ["install_console"]

STATIC_DIR = Path(__file__).parent / "static"


def install_console(app: FastAPI) -> None:
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.include_router(auth.router)
    app.include_router(tenant.router)
    app.include_router(operator.router)
