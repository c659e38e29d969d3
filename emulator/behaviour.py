"""How the emulated Bedrock behaves under load: its quota, its concurrency cap, injected faults
and latency, and the counters the benchmarks read."""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["EmulatorConfig", "Fault", "PoolBehaviour", "QuotaBucket", "Stats", "check_fault_rates"]


@dataclass(frozen=True)
class Fault:
    """An injected failure: an AWS error (``code``, ``http_status``) or a finish reason."""

    code: str
    http_status: int
    message: str
    finish_reason: str | None = None


FAULTS: dict[str, Fault] = {
    "internal": Fault("InternalServerException", 500, "An internal server error occurred."),
    "unavailable": Fault("ServiceUnavailableException", 503, "Service unavailable."),
    "model_timeout": Fault(
        "ModelTimeoutException", 408, "Model has timed out in processing the request."
    ),
    "not_ready": Fault(
        "ModelNotReadyException", 429, "Model is not ready to serve inference requests."
    ),
    "throttled": Fault(
        "ThrottlingException", 429, "Too many requests, please wait before trying again."
    ),
    "inference_error": Fault("", 200, "", finish_reason="Inference error"),
    "output_filter": Fault("", 200, "", finish_reason="Filter reason: output image"),
}


def check_fault_rates(rates: dict[str, float]) -> None:
    unknown = set(rates) - set(FAULTS)
    if unknown:
        msg = f"unknown fault kinds {sorted(unknown)}; known: {sorted(FAULTS)}"
        raise ValueError(msg)
    if sum(rates.values()) > 1 or any(r < 0 for r in rates.values()):
        msg = "fault rates must be >= 0 and add up to at most 1"
        raise ValueError(msg)


@dataclass(frozen=True)
class PoolBehaviour:
    """How one account or Region behaves, on top of the emulator's own behaviour: a request
    belongs to the pool its SigV4 credential scope names (``"us-east-1"``: every request signed
    for that Region; ``"AKIA...":`` one access key; ``"AKIA.../us-east-1"``: both)."""

    quota_rpm: float = 0.0  # 0 = only the emulator's quota
    quota_burst: float = 0.0
    latency_ms: float | None = None  # None = the emulator's
    fault_rates: dict[str, float] = field(default_factory=dict)
    denied_models: tuple[str, ...] = ()
    unsubscribed_models: tuple[str, ...] = ()
    # Models not offered in this Region (ResourceNotFoundException).
    missing_models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_fault_rates(self.fault_rates)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> PoolBehaviour:
        values = dict(raw)
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            msg = f"unknown pool fields {sorted(unknown)}"
            raise ValueError(msg)
        for name in ("denied_models", "unsubscribed_models", "missing_models"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that shapes the emulator's answers (flags, or ``IMAGEGEN_EMULATOR_*`` env)."""

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    quota_rpm: float = 0.0  # 0 = no quota
    quota_burst: float = 0.0  # 0 = one second's worth of the quota
    max_concurrency: int = 0  # 0 = no cap
    fault_rates: dict[str, float] = field(default_factory=dict)
    filter_words: tuple[str, ...] = ("forbidden",)
    fault_seed: int | None = None
    # Access problems to simulate (model ids without a profile prefix): IAM or model access not
    # granted (AccessDeniedException), or no Marketplace subscription ("Operation not allowed").
    denied_models: tuple[str, ...] = ()
    unsubscribed_models: tuple[str, ...] = ()
    # Accounts and Regions with their own quota, latency, faults and access (by credential scope).
    pools: dict[str, PoolBehaviour] = field(default_factory=dict)
    models: tuple[str, ...] = (
        "stability.stable-image-core-v1:0",
        "stability.stable-image-core-v1:1",
        "stability.stable-image-ultra-v1:0",
        "stability.stable-image-ultra-v1:1",
    )

    def __post_init__(self) -> None:
        check_fault_rates(self.fault_rates)

    def public(self) -> dict[str, Any]:
        return asdict(self)


class QuotaBucket:
    """Bedrock-style requests-per-minute quota: a token bucket refilled continuously."""

    def __init__(self, rpm: float, burst: float) -> None:
        self.rate_per_s = rpm / 60
        self.capacity = burst if burst > 0 else max(1.0, self.rate_per_s)
        self._tokens = self.capacity
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(
                self.capacity, self._tokens + (now - self._updated) * self.rate_per_s
            )
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


class Dice:
    """Seeded draws for faults and latency, so a run with the same seed repeats."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def fault(self, rates: dict[str, float]) -> Fault | None:
        with self._lock:
            roll = self._rng.random()
        for kind, rate in sorted(rates.items()):
            if roll < rate:
                return FAULTS[kind]
            roll -= rate
        return None

    def latency_s(self, mean_ms: float, jitter_ms: float) -> float:
        with self._lock:
            offset = self._rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
        return max(0.0, mean_ms + offset) / 1000


_RATE_WINDOW_S = 60.0
_SHORT_WINDOW_S = 10.0


class Stats:
    """Counters for ``GET /_emulator/stats``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._started = time.monotonic()
            self._outcomes: collections.Counter[str] = collections.Counter()
            self._requests = 0
            self._in_flight = 0
            self._max_in_flight = 0
            self._accepted_times: collections.deque[float] = collections.deque()
            self._pools: dict[str, collections.Counter[str]] = {}

    def begin(self) -> None:
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def end(self, outcome: str, *, accepted: bool, pool: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            self._in_flight -= 1
            self._outcomes[outcome] += 1
            if pool is not None:
                self._pools.setdefault(pool, collections.Counter())[outcome] += 1
            if accepted:
                self._accepted_times.append(now)
            while self._accepted_times and self._accepted_times[0] < now - _RATE_WINDOW_S:
                self._accepted_times.popleft()

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            recent = sum(1 for t in self._accepted_times if t >= now - _SHORT_WINDOW_S)
            in_last_minute = sum(1 for t in self._accepted_times if t >= now - _RATE_WINDOW_S)
            return {
                "requests": self._requests,
                "outcomes": dict(self._outcomes),
                "throttled": self._outcomes["ThrottlingException"],
                "generated": self._outcomes["ok"],
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
                "accepted_last_minute": in_last_minute,
                "rate_per_s_10s": recent / _SHORT_WINDOW_S,
                "pools": {name: dict(counts) for name, counts in self._pools.items()},
                "uptime_s": round(now - self._started, 3),
            }
