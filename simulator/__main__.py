"""Command line entry point: ``python -m simulator [flags]`` serves until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .app import App
from .config import LIMITER_KINDS, SimConfig, parse_model_spec
from .faults import FaultSettings
from .http_server import HttpServer
from .state import SimState


def _model_spec(text: str) -> object:
    try:
        return parse_model_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The simulator's flags."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator", description="OpenAI-compatible provider simulator."
    )
    add = parser.add_argument
    add("--port", type=int, default=8100, help="port to listen on; 0 picks a free one")
    add("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    add(
        "--model",
        dest="models",
        action="append",
        type=_model_spec,
        default=[],
        metavar="NAME:rpm=R,tpm=T,ctx=C",
        help="serve a model (repeatable); without any, every model name is served unlimited",
    )
    add("--limiter", choices=LIMITER_KINDS, default="bucket")
    add("--period-s", type=float, default=60.0, help='length of the RPM/TPM "minute"')
    add("--latency-ms", type=float, default=0.0)
    add("--latency-per-token-ms", type=float, default=0.0)
    add("--latency-jitter-ms", type=float, default=0.0)
    add("--error-rate", type=float, default=0.0, help="share of calls answered 500/502/503")
    add("--rate-limit-rate", type=float, default=0.0, help="share of calls answered 429")
    add("--retry-after-s", type=float, default=1.0, help="retry-after of injected 429s")
    add("--hang-rate", type=float, default=0.0, help="share of calls never answered")
    add("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    add("--seed", type=int, default=0, help="seed of random faults and latency jitter")
    add(
        "--batch-lines-per-s",
        type=float,
        default=1000.0,
        help="batch lanes: lines each batch answers per second, in the background",
    )
    add(
        "--batch-window-s",
        type=float,
        default=None,
        help="batch lanes: seconds a batch runs before it expires, replacing its 24 h "
        "completion window (a test's time scale); expires_at reports it too",
    )
    add(
        "--batch-stall",
        action="store_true",
        help="batch lanes: every batch stays in_progress without progress until cancelled or "
        'expired (also at run time: POST /_sim/faults {"batch_stall": true|false|[ids]})',
    )
    add(
        "--batch-cancel-s",
        type=float,
        default=0.0,
        help="batch lanes: seconds a cancelled batch stays cancelling, still answering lines, "
        "before it ends cancelled (OpenAI's can take minutes; default 0)",
    )
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> SimConfig:
    """Parse flags into a SimConfig, exiting with a usage error on bad values."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    try:
        faults = FaultSettings(
            error_rate=args.error_rate,
            rate_limit_rate=args.rate_limit_rate,
            hang_rate=args.hang_rate,
            latency_ms=args.latency_ms,
            latency_per_token_ms=args.latency_per_token_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            retry_after_s=args.retry_after_s,
        )
        return SimConfig(
            models=tuple(args.models),
            limiter=args.limiter,
            period_s=args.period_s,
            faults=faults,
            api_key=args.api_key,
            seed=args.seed,
            port=args.port,
            host=args.host,
            batch_lines_per_s=args.batch_lines_per_s,
            batch_window_s=args.batch_window_s,
            batch_stall=args.batch_stall,
            batch_cancel_s=args.batch_cancel_s,
        )
    except ValueError as err:
        parser.error(str(err))


async def serve(config: SimConfig) -> None:
    """Serve until SIGTERM or SIGINT, announcing the bound port on stderr once listening."""
    server = HttpServer(App(SimState(config)).handle)
    port = await server.start(config.host, config.port)
    print(f"simulator ready on http://{config.host}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator; returns the process exit code."""
    config = config_from_args(argv)
    try:
        asyncio.run(serve(config))
    except OSError as err:
        print(f"simulator: cannot listen on {config.host}:{config.port}: {err}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
