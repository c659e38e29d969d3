"""The HTTP API, one router per concern: jobs, batches, health, metrics; with authentication,
problem+json errors and request bodies in modules of their own."""

from __future__ import annotations

from producer.api.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
