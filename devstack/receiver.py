"""A webhook receiver on 127.0.0.1: records what it gets and answers as scripted.

The demo uses it to show the webhooks its jobs produce; the tests use it as a real endpoint.
"""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any

__all__ = ["Receiver"]


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that records what it gets and answers as scripted.

    ``script(path, [(status, headers, delay_s), ...])`` sets the answers for a path, one per
    request, the last one repeating. Unscripted paths answer 200.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._scripts: dict[str, list[tuple[int, dict[str, str], float]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, delay_s = receiver._answer(self.path, self.headers, body)
                time.sleep(delay_s)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender that went away mid-request (a killed worker) is not news

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def script(self, path: str, answers: list[tuple[int, dict[str, str], float]]) -> None:
        with self._lock:
            self._scripts[path] = list(answers)

    def _answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], float]:
        with self._lock:
            self.requests.append(
                {"path": path, "headers": dict(headers.items()), "body": body, "at": time.time()}
            )
            answers = self._scripts.get(path)
            answer = (
                (200, {}, 0.0)
                if not answers
                else (answers.pop(0) if len(answers) > 1 else answers[0])
            )
            self.requests[-1]["status"] = answer[0]
            return answer

    def received(self, path: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
