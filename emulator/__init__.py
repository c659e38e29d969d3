"""A local stand-in for bedrock-runtime InvokeModel (Stability image models).

Run it with ``python -m emulator``; embed it with ``EmulatorServer``. It imports neither
``producer`` nor ``worker``.
"""

from __future__ import annotations

from emulator.behaviour import EmulatorConfig
from emulator.server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer"]
