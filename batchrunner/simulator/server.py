"""Running the simulator: in a background thread, or alone from the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket

from aiohttp import web

from batchrunner.simulator.app import _check_faults, create_app
from batchrunner.simulator.background import BackgroundServer
from batchrunner.simulator.config import (
    RATE_HEADER_MODES,
    SimConfig,
    _default_deployments,
)
from batchrunner.simulator.ledger import Ledger

#: Seconds unfinished answers get when the server stops: nothing is worth waiting for.
_SHUTDOWN_TIMEOUT = 0.5


async def _start(
    app: web.Application, host: str, port: int
) -> tuple[web.AppRunner, int]:
    # Binding the socket here tells the real port when port 0 was asked for.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        # A client that gave up (timeout, reset) ends its handler at once.
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SimulatorServer(BackgroundServer):
    """The simulator on its own event loop in a daemon thread."""

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config if config is not None else SimConfig()
        self.ledger = Ledger()
        self.host = host
        self.port = port
        super().__init__()

    @property
    def url(self) -> str:
        """The ``azure_endpoint`` to give the client, once started."""
        if self._thread is None:
            msg = "the simulator is not running; call start() first"
            raise RuntimeError(msg)
        return _url(self.host, self.port)

    async def _serve(self) -> web.AppRunner:
        app = create_app(self.config, self.ledger)
        runner, self.port = await _start(app, self.host, self.port)
        return runner


def _quota(text: str) -> int | None:
    value = int(text)
    if value < 0:
        msg = f"a quota is 0 (none) or more, not {value}"
        raise argparse.ArgumentTypeError(msg)
    return value or None


def _pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    if not name:
        msg = f"expected NAME=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, value or name


def _rate(text: str) -> float | None:
    value = float(text)
    if value < 0:
        msg = f"a pace is 0 (as fast as it can) or more lines a second, not {value}"
        raise argparse.ArgumentTypeError(msg)
    return value or None


def _ordinal_lines(text: str) -> tuple[int, int]:
    nth, _, lines = text.partition("=")
    if not (nth.isdigit() and lines.isdigit() and int(nth) >= 1):
        msg = f"expected N=LINES (the N-th batch expires after LINES), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return int(nth), int(lines)


def _add_batch_args(parser: argparse.ArgumentParser, defaults: SimConfig) -> None:
    group = parser.add_argument_group("Batch API")
    add = group.add_argument
    add(
        "--batch-lines-per-second", type=_rate,
        default=defaults.batch_lines_per_second,
        help="lines a batch answers a second (default %(default)s; 0 for no limit)",
    )  # fmt: skip
    add(
        "--batch-state-seconds", type=float, default=defaults.batch_state_seconds,
        help="seconds a batch stays validating, finalizing, cancelling",
    )  # fmt: skip
    add(
        "--batch-enqueued-tokens", type=_quota, default=None,
        help="each deployment's enqueued-token quota (default: none)",
    )  # fmt: skip
    add(
        "--batch-deployment", action="append", default=None, metavar="NAME",
        help="a Global-Batch deployment (repeat; default: every deployment)",
    )  # fmt: skip
    add(
        "--batch-expire", action="append", default=[], type=_ordinal_lines,
        metavar="N=LINES", help="the N-th batch expires after LINES lines",
    )  # fmt: skip
    add(
        "--batch-fail", action="append", default=[], type=int, metavar="N",
        help="the N-th batch (from 1) fails",
    )  # fmt: skip


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m batchrunner.simulator",
        description="Serve a simulated Azure OpenAI endpoint until SIGINT/SIGTERM.",
    )
    add, defaults = parser.add_argument, SimConfig()
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000, help="0 picks a free port")
    add("--api-key", default=defaults.api_key)
    add(
        "--latency", type=float, default=0.0,
        help="seconds every answer takes, from the request's arrival",
    )  # fmt: skip
    add(
        "--rpm", type=_quota, default=defaults.rpm,
        help="requests per minute (default %(default)s; 0 for no limit)",
    )  # fmt: skip
    add(
        "--tpm", type=_quota, default=defaults.tpm,
        help="tokens per minute (default %(default)s; 0 for no limit)",
    )  # fmt: skip
    add("--window", type=float, default=defaults.window, help="rate-limit window, s")
    add("--seed", type=int, default=0)
    add("--slow-seconds", type=float, default=defaults.slow_seconds)
    add("--retry-after-ms", type=int, default=defaults.retry_after_ms)
    add("--embedding-dimensions", type=int, default=defaults.embedding_dimensions)
    add(
        "--rate-headers", choices=RATE_HEADER_MODES, default="full",
        help="x-ratelimit-* headers sent: limit and remaining (full), remaining"
        " only (as APIM and gateways send) or none",
    )  # fmt: skip
    add(
        "--no-rate-headers", dest="rate_headers", action="store_const",
        const="none", help="the same as --rate-headers none",
    )  # fmt: skip
    add(
        "--charge-factor", type=float, default=defaults.charge_factor,
        help="charge each request this many times the client's estimate",
    )  # fmt: skip
    add("--fault", action="append", default=[], type=_pair, metavar="KIND=RATE")
    _add_batch_args(parser, defaults)
    add(
        "--deployment",
        action="append",
        default=[],
        type=_pair,
        metavar="NAME=MODEL",
        help="add a deployment (MODEL defaults to NAME)",
    )
    args = parser.parse_args(argv)
    try:
        args.fault = {kind: float(rate) for kind, rate in args.fault}
        _check_faults(args.fault)
    except ValueError as exc:
        parser.error(f"--fault: {exc}")
    return args


async def _serve_until_signalled(config: SimConfig, host: str, port: int) -> None:
    # Nobody reads this ledger: keep counts only, not every body.
    app = create_app(config, Ledger(keep_entries=False))
    runner, port = await _start(app, host, port)
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers; Ctrl-C still ends asyncio.run there.
        with contextlib.suppress(NotImplementedError):
            asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
    print(f"batchrunner simulator listening on {_url(host, port)}", flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def _config(args: argparse.Namespace) -> SimConfig:
    """The simulator's settings from its command line."""
    batch_deployments = args.batch_deployment
    return SimConfig(
        api_key=args.api_key,
        deployments={**_default_deployments(), **dict(args.deployment)},
        latency=args.latency,
        rpm=args.rpm,
        tpm=args.tpm,
        window=args.window,
        seed=args.seed,
        fault_rates=args.fault,
        slow_seconds=args.slow_seconds,
        rate_headers=args.rate_headers,
        charge_factor=args.charge_factor,
        retry_after_ms=args.retry_after_ms,
        embedding_dimensions=args.embedding_dimensions,
        batch_deployments=None if batch_deployments is None else set(batch_deployments),
        batch_lines_per_second=args.batch_lines_per_second,
        batch_state_seconds=args.batch_state_seconds,
        batch_enqueued_tokens=args.batch_enqueued_tokens,
        batch_expire_after=dict(args.batch_expire),
        batch_fail=set(args.batch_fail),
    )


def main(argv: list[str] | None = None) -> None:
    """Serve the simulator until SIGINT or SIGTERM."""
    args = _parse_args(argv)
    config = _config(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(config, args.host, args.port))
