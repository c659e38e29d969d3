"""What every response passes through last: the brake on the shared tokens and the security
headers (outermost, so refusals from the middlewares inside get them too)."""

from __future__ import annotations

from fastapi import FastAPI

from producer.api.security_headers import SecurityHeadersMiddleware, image_origins
from producer.api.state import ApiState
from producer.api.token_brake import TokenBrakeMiddleware

__all__ = ["install_hardening"]


def install_hardening(app: FastAPI) -> None:
    """Call after every other middleware is added (each one added wraps the ones before)."""
    state: ApiState = app.state.api
    app.add_middleware(TokenBrakeMiddleware)
    app.add_middleware(
        SecurityHeadersMiddleware,
        settings=state.settings,
        image_origins=image_origins(state.settings),
    )
