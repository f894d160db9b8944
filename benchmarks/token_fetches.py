"""
Token fetches per run under Entra ID auth: batchrunner as a child process with a
managed identity (the fake Container Apps endpoint of ``identity_sim``), against
the simulator, which takes only that endpoint's tokens.

    python -m benchmarks.token_fetches [--rows 2000] [--concurrency 100]
                                       [--lifetime 10] [--seconds 30]

Runs: many rows at high concurrency; short-lived tokens over a longer run; a
token revoked mid-run; an identity endpoint failing (HTTP 500) from the start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from batchrunner.simulator import SimConfig, SimulatorServer
from batchrunner.simulator.identity import IdentityServer, TokenIssuer
from benchmarks.common import DEPLOYMENT, ROOT, write_input

_OURS = ("AZURE_", "OPENAI_", "BATCHRUNNER_", "IDENTITY_", "MSI_")


def run_batchrunner(
    source: Path, args: list[str], sim: SimulatorServer, identity: IdentityServer
) -> tuple[int, float]:
    """Run the command on *source* with a managed identity; (exit code, wall s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    env.update(
        AZURE_OPENAI_ENDPOINT=sim.url,
        OPENAI_API_VERSION="2024-10-21",
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENT,
        BATCHRUNNER_AUTH="managed_identity",
        PYTHONPATH=str(ROOT),
        **identity.app_service_environment(),
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "batchrunner", str(source), "-q", "--fresh", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, time.monotonic() - started


def scenario(
    name: str,
    tmp: Path,
    rows: int,
    args: list[str],
    *,
    lifetime: float = 3600.0,
    prepare: Callable[[TokenIssuer, SimConfig], None] | None = None,
) -> None:
    """One run, and a line of what it took."""
    issuer = TokenIssuer(lifetime=lifetime)
    config = SimConfig(bearer_validator=issuer.validate)
    if prepare is not None:
        prepare(issuer, config)
    with IdentityServer(issuer) as identity, SimulatorServer(config) as sim:
        source = write_input(tmp / f"{name}.jsonl", rows)
        code, wall = run_batchrunner(source, args, sim, identity)
        ok, refused = sim.ledger.count(200), sim.ledger.count(401)
    print(
        f"{name:30} exit {code:<3} rows ok {ok:>5}/{rows:<5} token fetches"
        f" {issuer.ledger.fetches():>3}  identity requests {issuer.ledger.count():>3}"
        f"  401s {refused:>2}  {wall:6.1f} s"
    )


def revoke_after(requests: int) -> Callable[[TokenIssuer, SimConfig], None]:
    """Revoke every token once the simulator has seen *requests* requests."""

    def prepare(issuer: TokenIssuer, config: SimConfig) -> None:
        seen = 0
        lock = threading.Lock()

        def validate(token: str) -> bool:
            nonlocal seen
            with lock:
                seen += 1
                if seen == requests:
                    issuer.revoke()
            return issuer.validate(token)

        config.bearer_validator = validate

    return prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--lifetime", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    concurrency = ["--concurrency", str(args.concurrency)]
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        scenario(f"{args.rows} rows @{args.concurrency}", tmp, args.rows, concurrency)
        # 10 rows a second for the length of the run.
        paced = int(args.seconds * 10)
        scenario(
            f"{args.lifetime:.0f} s tokens, {args.seconds:.0f} s run",
            tmp,
            paced,
            ["--rpm", "600", "--concurrency", "8"],
            lifetime=args.lifetime,
        )
        scenario(
            "revoked after 300 requests",
            tmp,
            1000,
            concurrency,
            prepare=revoke_after(300),
        )
        scenario(
            "identity failing at start",
            tmp,
            args.rows,
            concurrency,
            prepare=lambda issuer, _: issuer.fail(500),
        )


if __name__ == "__main__":
    main()
