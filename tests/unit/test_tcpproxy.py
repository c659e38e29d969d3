"""The TCP proxy ``make chaos-failover`` partitions a primary with: it forwards, a partition
forwards nothing while leaving connections open, and healing closes what it cut."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from devstack.tcpproxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    running = TcpProxy(server.server_address[1]).start()
    yield running
    running.stop()
    server.shutdown()
    server.server_close()


def _connect(proxy: TcpProxy) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    conn.settimeout(0.5)
    return conn


def _echoes(conn: socket.socket, data: bytes) -> bool:
    conn.sendall(data)
    try:
        return conn.recv(4096) == data
    except TimeoutError:
        return False


def test_a_partition_silences_open_and_new_connections_and_healing_closes_them(
    proxy: TcpProxy,
) -> None:
    before = _connect(proxy)
    assert _echoes(before, b"ping")

    proxy.partition()
    assert not _echoes(before, b"lost")  # open, and silent: no answer, no reset
    during = _connect(proxy)  # accepted, as a partitioned peer's SYN would not be refused
    assert not _echoes(during, b"lost too")

    proxy.heal()
    for cut in (before, during):
        cut.settimeout(2)
        assert cut.recv(4096) == b""  # closed: its stream lost bytes
    after = _connect(proxy)
    assert _echoes(after, b"back")
    for conn in (before, during, after):
        conn.close()
