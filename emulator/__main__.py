"""``python -m emulator --host 127.0.0.1 --port 4566 [options]``: a local Bedrock InvokeModel.

Every option can also come from the environment as ``IMAGEGEN_EMULATOR_<OPTION>`` (for example
``IMAGEGEN_EMULATOR_QUOTA_RPM=1200``); a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from emulator.behaviour import FAULTS, EmulatorConfig, PoolBehaviour
from emulator.server import EmulatorServer

ENV_PREFIX = "IMAGEGEN_EMULATOR_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=_env("host", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env("port", "4566")))
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=float(_env("latency_ms", "0")),
        help="mean generation latency",
    )
    parser.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=float(_env("latency_jitter_ms", "0")),
        help="uniform jitter around the mean",
    )
    parser.add_argument(
        "--quota-rpm",
        type=float,
        default=float(_env("quota_rpm", "0")),
        help="requests per minute before ThrottlingException (0: none)",
    )
    parser.add_argument(
        "--quota-burst",
        type=float,
        default=float(_env("quota_burst", "0")),
        help="bucket size (0: one second's worth of the quota)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=int(_env("max_concurrency", "0")),
        help="calls in flight before ThrottlingException (0: no cap)",
    )
    for kind in FAULTS:
        flag = kind.replace("_", "-")
        parser.add_argument(
            f"--{flag}-rate",
            type=float,
            default=float(_env(f"{kind}_rate", "0")),
            help=f"fraction of calls answered with {_describe(kind)}",
        )
    parser.add_argument(
        "--filter-words",
        default=_env("filter_words", "forbidden"),
        help="comma-separated words whose prompts are filtered",
    )
    parser.add_argument(
        "--fault-seed",
        type=int,
        default=int(_env("fault_seed", "0")) or None,
        help="seed for the fault and latency dice, so runs repeat",
    )
    parser.add_argument(
        "--denied-models",
        default=_env("denied_models", ""),
        help="comma-separated model ids answered with AccessDeniedException",
    )
    parser.add_argument(
        "--unsubscribed-models",
        default=_env("unsubscribed_models", ""),
        help="comma-separated model ids answered as without a Marketplace subscription",
    )
    parser.add_argument(
        "--pools",
        default=_env("pools", ""),
        help='accounts and Regions with their own behaviour, JSON: {"us-east-1": {"quota_rpm": '
        '600, "latency_ms": 50, "fault_rates": {"unavailable": 0.1}, "denied_models": [...]}}; '
        "a request belongs to the pool its credential scope names (Region, access key, or "
        '"KEY/Region")',
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def _describe(kind: str) -> str:
    fault = FAULTS[kind]
    if fault.finish_reason:
        return f'finish reason "{fault.finish_reason}"'
    return f"{fault.code} ({fault.http_status})"


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    rates = {kind: getattr(args, f"{kind}_rate") for kind in FAULTS}
    return EmulatorConfig(
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        quota_rpm=args.quota_rpm,
        quota_burst=args.quota_burst,
        max_concurrency=args.max_concurrency,
        fault_rates={kind: rate for kind, rate in rates.items() if rate},
        filter_words=tuple(w.strip().lower() for w in args.filter_words.split(",") if w.strip()),
        fault_seed=args.fault_seed,
        denied_models=_names(args.denied_models),
        unsubscribed_models=_names(args.unsubscribed_models),
        pools=_pools(args.pools),
    )


def _pools(text: str) -> dict[str, PoolBehaviour]:
    if not text.strip():
        return {}
    raw = json.loads(text)
    if not isinstance(raw, dict):
        msg = "--pools must be a JSON object of pool name to behaviour"
        raise ValueError(msg)
    return {str(name): PoolBehaviour.parse(value) for name, value in raw.items()}


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s emulator %(levelname)s %(message)s",
    )
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"emulator: {e}", file=sys.stderr)
        return 2
    server = EmulatorServer(config, args.host, args.port)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    logging.getLogger("imagegen.emulator").info("Bedrock emulator listening on %s", server.url)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
