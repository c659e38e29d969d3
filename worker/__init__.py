"""bedrock-imagegen's execution side: the Celery app and tasks, the Bedrock call, the image
checks, S3 and the worker's transitions of the results store.

The Celery app lives in ``worker.app`` (``celery -A worker.app worker``); importing this package
does not create it.
"""

from __future__ import annotations

__all__: list[str] = []
