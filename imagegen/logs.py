"""Logging for every process of the service: JSON lines (default) or key=value text.

A log call names its event in the message and puts the facts in ``extra``::

    log.info("job succeeded", extra={"job_id": job_id, "attempt": 2, "elapsed_ms": 812})

becomes ``{"ts": "...", "level": "INFO", "logger": "imagegen.job", "msg": "job succeeded",
"job_id": "...", "attempt": 2, "elapsed_ms": 812}``. Prompts are never logged (``prompt_facts``
gives their length and a hash) and fields that look like secrets are dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "prompt_facts"]

_STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_SECRET_WORDS = ("secret", "password", "authorization", "api_key", "token")


def prompt_facts(prompt: str) -> dict[str, Any]:
    """What may be logged about a prompt: its length and a short hash, never its text."""
    return {
        "prompt_chars": len(prompt),
        "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
    }


def _facts(record: logging.LogRecord) -> dict[str, Any]:
    facts = {
        name: value
        for name, value in vars(record).items()
        if name not in _STANDARD
        and not name.startswith("_")
        and not any(word in name.lower() for word in _SECRET_WORDS)
    }
    celery_task = facts.get("data")
    if isinstance(celery_task, dict) and "kwargs" in celery_task:
        # Celery logs a task's keyword arguments; a raw message carries its job (and prompt)
        # there.
        facts["data"] = {**celery_task, "kwargs": "(not logged)"}
    return facts


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_facts(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        facts = " ".join(f"{name}={value}" for name, value in _facts(record).items())
        line = (
            f"{datetime.fromtimestamp(record.created, tz=UTC):%Y-%m-%d %H:%M:%S} "
            f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        )
        if facts:
            line = f"{line} {facts}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(level: str, log_format: str) -> None:
    """One handler on the root logger, writing to stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
