"""An HTTP server speaking bedrock-runtime's InvokeModel wire protocol (restJson1).

``POST /model/{modelId}/invoke`` answers as Bedrock does for Stability's image models, so boto3,
the AWS CLI and the model documentation's examples work against it by changing only the endpoint
URL. Errors carry the ``x-amzn-ErrorType`` header and a JSON ``message``; botocore turns them into
``ClientError`` with the same codes as AWS.

Extra routes for tests and benchmarks: ``GET /_emulator/health``, ``GET /_emulator/stats``,
``POST /_emulator/reset``, ``PUT /_emulator/pools/{name}`` (a pool's behaviour, JSON, from now
on; an empty body forgets it).

Several pools (accounts and Regions) in one emulator: a request belongs to the pool its SigV4
credential scope names (access key, Region), each with its own quota, latency, faults and access
(``PoolBehaviour``).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from emulator.behaviour import Dice, EmulatorConfig, PoolBehaviour, QuotaBucket, Stats
from emulator.picture import render
from emulator.services import SERVICES, ServiceSpec, parse_service_body, run_service
from emulator.validation import MAX_SEED, RequestError, parse_request, service_request

__all__ = ["EmulatorServer"]

log = logging.getLogger("imagegen.emulator")

_POOLS_PATH = "/_emulator/pools/"
_INVOKE_PATH = re.compile(r"^/model/(?P<model>[^/]+)/invoke$")
_ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
# Input images travel base64-encoded in the body.
_MAX_BODY_BYTES = 32 * 1024 * 1024
# The credential scope of a SigV4 Authorization header: access key and Region.
_SCOPE = re.compile(r"Credential=(?P<key>[^/,\s]+)/\d{8}/(?P<region>[^/,\s]+)/")
# Cross-region inference profiles prefix the model id with a geography.
_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.")


# A pool's name, behaviour and quota.
_PoolState = tuple[str, PoolBehaviour, QuotaBucket | None]


class _ApiError(Exception):
    def __init__(self, code: str, status: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message


class _Emulator:
    """The behaviour behind the routes, shared by all request threads."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.quota = QuotaBucket(config.quota_rpm, config.quota_burst) if config.quota_rpm else None
        self.dice = Dice(config.fault_seed)
        self._seed_rng = random.SystemRandom()
        self._active = 0
        self._active_lock = threading.Lock()
        self._pools: dict[str, tuple[PoolBehaviour, QuotaBucket | None]] = {}
        for name, behaviour in config.pools.items():
            self.set_pool(name, behaviour)

    def set_pool(self, name: str, behaviour: PoolBehaviour | None) -> None:
        """Give pool ``name`` this behaviour from now on (None: forget it); a new quota starts
        full."""
        with self._active_lock:
            if behaviour is None:
                self._pools.pop(name, None)
                return
            quota = None
            if behaviour.quota_rpm:
                quota = QuotaBucket(behaviour.quota_rpm, behaviour.quota_burst)
            self._pools[name] = (behaviour, quota)

    def pool_of(self, authorization: str) -> _PoolState | None:
        """The pool a request's credential scope names: access key and Region, then the access
        key, then the Region."""
        found = _SCOPE.search(authorization)
        if found is None:
            return None
        key, region = found["key"], found["region"]
        with self._active_lock:
            for name in (f"{key}/{region}", key, region):
                if name in self._pools:
                    behaviour, quota = self._pools[name]
                    return name, behaviour, quota
        return None

    def pool_answer(self, model_id: str, pool: _PoolState) -> None:
        """What a pool says before the call runs: its access, then its quota and its faults
        (may raise ``_ApiError``)."""
        _, behaviour, quota = pool
        base = model_id
        for prefix in _PROFILE_PREFIXES:
            base = base.removeprefix(prefix)
        if base in behaviour.missing_models:
            raise _ApiError(
                "ResourceNotFoundException",
                404,
                "Could not resolve the foundation model from the provided model identifier.",
            )
        if base in behaviour.denied_models:
            raise _ApiError(
                "AccessDeniedException",
                403,
                "You don't have access to the model with the specified model ID.",
            )
        if base in behaviour.unsubscribed_models:
            raise _ApiError(
                "ValidationException",
                400,
                "Operation not allowed: the account has no AWS Marketplace subscription to "
                "this model.",
            )
        if quota is not None and not quota.try_take():
            raise _ApiError(
                "ThrottlingException", 429, "Too many requests, please wait before trying again."
            )
        if behaviour.latency_ms is not None:
            time.sleep(self.dice.latency_s(behaviour.latency_ms, 0.0))
        fault = self.dice.fault(behaviour.fault_rates)
        if fault is not None and fault.finish_reason is None:
            raise _ApiError(fault.code, fault.http_status, fault.message)

    def resolve_model(self, model_id: str) -> ServiceSpec | None:
        """The model a call names: None for Core and Ultra (text to image), else its service
        spec. Image Services answer only through an inference profile (``us.``)."""
        base = model_id
        for prefix in _PROFILE_PREFIXES:
            base = base.removeprefix(prefix)
        if base in self.config.denied_models:
            raise _ApiError(
                "AccessDeniedException",
                403,
                "You don't have access to the model with the specified model ID.",
            )
        if base in self.config.unsubscribed_models:
            raise _ApiError(
                "ValidationException",
                400,
                "Operation not allowed: the account has no AWS Marketplace subscription to "
                "this model.",
            )
        if base in self.config.models:
            return None
        spec = SERVICES.get(base)
        if spec is None:
            raise _ApiError(
                "ResourceNotFoundException",
                404,
                "Could not resolve the foundation model from the provided model identifier.",
            )
        if spec.profile_only and base == model_id:
            raise _ApiError(
                "ValidationException",
                400,
                f"Invocation of model ID {model_id} with on-demand throughput isn't supported. "
                "Retry your request with the ID or ARN of an inference profile that contains "
                "this model.",
            )
        return spec

    def enter(self) -> None:
        with self._active_lock:
            cap = self.config.max_concurrency
            if cap and self._active >= cap:
                raise _ApiError(
                    "ThrottlingException",
                    429,
                    "Too many concurrent requests, please wait before trying again.",
                )
            self._active += 1

    def leave(self) -> None:
        with self._active_lock:
            self._active -= 1

    def generate(
        self,
        model_id: str,
        body: Any,
        pool: _PoolState | None = None,
    ) -> tuple[dict[str, Any], str]:
        """The response payload and the outcome name for the stats (may raise ``_ApiError``)."""
        if pool is not None:
            self.pool_answer(model_id, pool)
        spec = self.resolve_model(model_id)
        try:
            if spec is None:
                request = parse_request(body)
            else:
                body, images = parse_service_body(spec, body)
                request = service_request(body)
        except RequestError as e:
            raise _ApiError("ValidationException", 400, str(e)) from e
        self.enter()
        try:
            if self.quota is not None and not self.quota.try_take():
                raise _ApiError(
                    "ThrottlingException",
                    429,
                    "Too many requests, please wait before trying again.",
                )
            time.sleep(self.dice.latency_s(self.config.latency_ms, self.config.latency_jitter_ms))
            seed = request.seed or self._seed_rng.randint(1, MAX_SEED)
            fault = self.dice.fault(self.config.fault_rates)
            if fault is not None and fault.finish_reason is None:
                raise _ApiError(fault.code, fault.http_status, fault.message)
            words = set(re.findall(r"[a-z0-9]+", request.prompt.lower()))
            if words & set(self.config.filter_words):
                return _payload(seed, "Filter reason: prompt", ""), "filtered_prompt"
            if fault is not None and fault.finish_reason is not None:
                outcome = fault.finish_reason.lower().replace(" ", "_").replace(":", "")
                return _payload(seed, fault.finish_reason, ""), outcome
            if spec is None:
                image = render(
                    request.prompt,
                    request.negative_prompt,
                    seed,
                    request.aspect_ratio,
                    request.output_format,
                )
            else:
                image = run_service(spec, body, images, seed)
            return _payload(seed, None, base64.b64encode(image).decode()), "ok"
        finally:
            self.leave()


def _payload(seed: int, finish_reason: str | None, image_b64: str) -> dict[str, Any]:
    return {
        "seeds": [seed],
        "finish_reasons": [finish_reason],
        "images": [image_b64] if image_b64 else [],
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        emulator = self.server.emulator
        if self.path == "/_emulator/health":
            self._send_json(200, {"status": "ok"})
        elif self.path == "/_emulator/stats":
            self._send_json(200, {**emulator.stats.snapshot(), "config": emulator.config.public()})
        else:
            self._send_error(_ApiError("UnknownOperationException", 404, "Unknown operation"))

    def do_POST(self) -> None:
        emulator = self.server.emulator
        body = self._read_body()
        if self.path == "/_emulator/reset":
            emulator.stats.reset()
            self._send_json(200, {"reset": True})
            return
        if self.path.startswith(_POOLS_PATH):
            self._put_pool(emulator, self.path.removeprefix(_POOLS_PATH), body)
            return
        match = _INVOKE_PATH.match(self.path.split("?", 1)[0])
        if match is None:
            self._send_error(_ApiError("UnknownOperationException", 404, "Unknown operation"))
            return
        emulator.stats.begin()
        started = time.perf_counter()
        pool = emulator.pool_of(self.headers.get("Authorization") or "")
        pool_name = pool[0] if pool else None
        try:
            if not self.headers.get("Authorization"):
                raise _ApiError(
                    "AccessDeniedException",
                    403,
                    "Missing Authentication Token: requests must be signed.",
                )
            try:
                parsed = json.loads(body or b"null")
            except ValueError as e:
                raise _ApiError(
                    "ValidationException", 400, f"Malformed input request: body is not JSON ({e})"
                ) from e
            payload, outcome = emulator.generate(unquote(match["model"]), parsed, pool)
        except _ApiError as e:
            emulator.stats.end(e.code, accepted=e.code != "ThrottlingException", pool=pool_name)
            self._send_error(e)
            return
        latency_ms = round((time.perf_counter() - started) * 1000)
        emulator.stats.end(outcome, accepted=True, pool=pool_name)
        self._send_json(
            200,
            payload,
            {
                "X-Amzn-Bedrock-Invocation-Latency": str(latency_ms),
                "X-Amzn-Bedrock-Content-Type": "application/json",
            },
        )

    def do_PUT(self) -> None:
        self.do_POST()

    def _put_pool(self, emulator: _Emulator, name: str, body: bytes) -> None:
        try:
            raw = json.loads(body) if body.strip() else None
            behaviour = None if raw is None else PoolBehaviour.parse(raw)
        except (ValueError, TypeError) as e:
            self._send_json(400, {"message": f"bad pool behaviour: {e}"})
            return
        emulator.set_pool(unquote(name), behaviour)
        self._send_json(200, {"pool": unquote(name), "set": behaviour is not None})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length else b""

    def _send_error(self, error: _ApiError) -> None:
        self._send_json(
            error.status,
            {"message": error.message},
            {"x-amzn-ErrorType": error.code + _ERROR_TYPE_SUFFIX},
        )

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], emulator: _Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that hung up mid-request (a read timeout, a killed worker) is not news.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class EmulatorServer:
    """The emulator on ``host:port`` (port 0 picks a free one); ``url`` once it is bound."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self._http = _HttpServer((host, port), _Emulator(config))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def serve_forever(self) -> None:
        self._http.serve_forever(poll_interval=0.2)

    def start(self) -> EmulatorServer:
        """Serve from a background thread (for tests that run it in-process)."""
        self._thread = threading.Thread(target=self.serve_forever, name="emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
