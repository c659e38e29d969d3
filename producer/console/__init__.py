"""The web console, served by the API process at ``/console``.

Server-rendered pages (Jinja, autoescaped) with two small scripts of our own
(``static/live.js``: one event stream per browser shared by its tabs, and the pages it keeps up
to date; ``static/console.js``: the model's fields in the submit form, the quota chart, times in
the browser's zone). Nothing is built and nothing is loaded from another host, so it works in a
private network. Every post must come from the console's own page (``csrf``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from producer.api.state import ApiState
from producer.console import auth, finder, live, operator, tenant
from producer.console.csrf import ConsoleCsrfMiddleware, CsrfRefusedError, require_csrf_token
from producer.console.live import SessionStreams
from producer.console.render import page

__all__ = ["install_console"]

STATIC_DIR = Path(__file__).parent / "static"


def refused_page(reason: str) -> HTMLResponse:
    """What a post refused as forged gets: 403, and the way back."""
    return page("refused.html", status_code=403, reason=reason)


def install_console(app: FastAPI) -> None:
    state: ApiState = app.state.api
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    app.state.console_streams = SessionStreams(state.held)
    checked = [Depends(require_csrf_token)]
    app.include_router(auth.router, dependencies=checked)
    app.include_router(tenant.router, dependencies=checked)
    app.include_router(finder.router, dependencies=checked)
    app.include_router(live.router, dependencies=checked)
    app.include_router(operator.router, dependencies=checked)
    app.add_middleware(ConsoleCsrfMiddleware, settings=state.settings, refuse=refused_page)

    @app.exception_handler(CsrfRefusedError)
    async def _refused(_: Request, error: CsrfRefusedError) -> HTMLResponse:
        return refused_page(str(error))
