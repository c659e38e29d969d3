"""bedrock-imagegen's shared core: the job contract and records, settings, errors, the Celery
wire format, and the Redis stores that own every record.

This is the only package that knows a Redis key, a hash field or a line of Lua. ``producer``
(every way to submit and read) and ``worker`` (execution) both build on it and never import
each other; ``emulator`` imports nothing of ours.
"""

from __future__ import annotations

__all__: list[str] = []
