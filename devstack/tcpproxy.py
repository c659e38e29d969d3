"""A TCP proxy that can partition what it forwards: the primary of ``make chaos-failover`` is
reached only through one, so cutting it off is a network partition, not a crash.

``partition()`` stops forwarding without closing anything, as a lost network does: bytes sent
either way are dropped, connections made meanwhile are accepted and left silent, and the
clients wait for their own timeouts. ``heal()`` closes the connections the partition cut (their
streams lost bytes; TCP would reset them) and forwards new ones again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from devstack.processes import free_port

__all__ = ["TcpProxy"]

HOST = "127.0.0.1"
_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    cut: bool = False

    def close(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.close()


class TcpProxy:
    """Forwards ``HOST:port`` to ``HOST:target_port`` from a thread of its own."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.partitioned = False
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def partition(self) -> None:
        """Forward nothing from now on; every open connection goes silent."""
        self._call(self._cut())

    def heal(self) -> None:
        """Close the connections the partition cut and forward new ones again."""
        self._call(self._heal())

    # -- in the proxy's loop -----------------------------------------------------------------

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        self._links.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _cut(self) -> None:
        self.partitioned = True
        for link in self._links:
            link.cut = True

    async def _heal(self) -> None:
        self.partitioned = False
        for link in [link for link in self._links if link.cut]:
            link.close()
            self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link([writer], cut=self.partitioned)
        self._links.add(link)
        if link.cut:  # accepted, then silence: what a client behind a partition sees
            await self._drain(reader, link)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            link.close()
            self._links.discard(link)
            return
        link.writers.append(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer, link),
            self._pipe(upstream_reader, writer, link),
        )
        link.close()
        self._links.discard(link)

    @staticmethod
    async def _drain(reader: asyncio.StreamReader, link: _Link) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(_CHUNK):
                pass
        link.close()

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(_CHUNK):
                if link.cut:
                    continue  # dropped on the floor
                writer.write(data)
                await writer.drain()
        link.close()
