"""The embedded local stack behind ``make demo`` and ``make dev``, also used by the tests.

It sits on top of everything: it starts Redis, the emulator, moto's S3 server, workers and
Flower as child processes, and drives them with ``producer.Client``.
"""

from __future__ import annotations

from devstack.stack import Stack, StackOptions

__all__ = ["Stack", "StackOptions"]
