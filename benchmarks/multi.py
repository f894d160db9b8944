"""
Several deployments as one: how close batchrunner gets to the sum of their
quotas, how many 429s it collects, and what a deployment dying mid-run costs.

    python -m benchmarks.multi [--seconds 60] [--runs given-2,given-4,...]

Every deployment is a simulator in its own process with its own key and TPM
limit (10 s window, 200 ms latency, x-ratelimit-* headers), as in
benchmarks.quota; the input is sized so that the work takes about --seconds
at the summed limits. Runs:

- given-N:   N deployments, each entry giving its tpm;
- learned-N: N deployments, no tpm given: each pacer learns its own from the
             deployment's headers (limit and remaining);
- remaining-N: the same against deployments that send remaining-* only;
- kill-4:    4 deployments with their tpm given; one (20k TPM) is killed once
             30% of the rows are done. Its rows must go to the others (0 rows
             failed) and the wall time stay near the survivors' physical limit.
- single-N:  for comparison, one deployment holding the N deployments' summed
             quota, run the single-deployment way (endpoint, --deployment,
             --tpm): what splitting the quota costs. The single-deployment
             figures themselves (naive, learned, aimd, …) are benchmarks.quota's.

Targets (issue 13): given ≥ 90% of the summed limits and ≤ 1% of requests
answered 429; learned ≥ 85% and ≤ 5%; kill 0 failed, wall ≤ 1.10 × physical.
The last column says whether each run met its target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, simulator_stats, write_input

MAX_TOKENS = 200
#: Charged tokens of one row of write_input(words=45) with MAX_TOKENS, about.
ROW_TOKENS = 262
LIMITS = {2: (40_000, 20_000), 4: (40_000, 30_000, 20_000, 10_000)}
#: In kill-4: which deployment dies, and when (share of the rows done).
KILLED, KILL_AT = 2, 0.30


@dataclass
class Deployment:
    """One simulator process standing for a deployment."""

    name: str
    tpm: int
    key: str
    proc: subprocess.Popen[str]
    url: str
    #: Its stats when it was killed (a dead process answers nothing).
    last: dict[str, Any] | None = None

    def stats(self) -> dict[str, Any]:
        """What it has received so far (or when it died)."""
        return self.last if self.last is not None else simulator_stats(self.url)

    def kill(self) -> None:
        """Take the deployment down, remembering what it had done."""
        self.last = simulator_stats(self.url)
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextmanager
def deployment(name: str, tpm: int, headers: str = "full") -> Iterator[Deployment]:
    """A simulator process with its own key, *tpm* limit and rate *headers*."""
    key = f"bench-key-{name}"
    args = ["--tpm", str(tpm), "--window", "10", "--latency", "0.2"]
    args += ["--rate-headers", headers]
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrunner.simulator", "--port", "0",
         "--api-key", key, *args],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        yield Deployment(name, tpm, key, proc, url)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


@dataclass
class Outcome:
    """One run's figures."""

    name: str
    limits: tuple[int, ...]
    rows: int
    summary: dict[str, Any]
    stats: list[dict[str, Any]] = field(default_factory=list)
    killed_at: float | None = None  # share of the rows done at the kill

    @property
    def requests(self) -> int:
        return sum(s["requests"] for s in self.stats)

    @property
    def throttled(self) -> int:
        return sum(s["statuses"].get("429", 0) for s in self.stats)

    @property
    def charged(self) -> int:
        return sum(s["charged_tokens"] for s in self.stats)

    @property
    def wall(self) -> float:
        return float(self.summary["elapsed_seconds"])

    def physical(self) -> float:
        """The least wall time the quotas allow for the tokens charged."""
        total = sum(self.limits)
        if self.killed_at is None:
            return self.charged / total * 60
        survivors = total - self.limits[KILLED]
        before = self.charged * self.killed_at
        return (before / total + (self.charged - before) / survivors) * 60


def _watch_and_kill(
    deployments: list[Deployment], rows: int, done: threading.Event
) -> list[float]:
    """Kill one deployment once KILL_AT of the rows were answered; the share then."""
    killed: list[float] = []
    while not done.is_set():
        answered = sum(d.stats()["statuses"].get("200", 0) for d in deployments)
        if answered >= KILL_AT * rows:
            deployments[KILLED].kill()
            killed.append(answered / rows)
            return killed
        done.wait(0.1)  # a benchmark's sampling interval, not a test's sync
    return killed


def verdict(o: Outcome) -> str:
    """Whether *o* met the issue's target for its kind of run."""
    kind = o.name.split("-")[0]
    used = o.physical() / o.wall if o.wall else 0.0
    share = o.throttled / o.requests if o.requests else 0.0
    failed = o.summary["rows_failed"]
    if kind == "kill":
        met = failed == 0 and o.wall <= 1.10 * o.physical()
    elif kind in ("given", "single"):
        met = failed == 0 and used >= 0.90 and share <= 0.01
    else:
        met = failed == 0 and used >= 0.85 and share <= 0.05
    return "met" if met else "MISSED"


def _one(name: str, seconds: float, tmp: Path) -> Outcome:
    kind, count = name.split("-")
    limits = LIMITS[int(count)]
    if kind == "single":
        limits = (sum(limits),)
    headers = "remaining" if kind == "remaining" else "full"
    rows = round(sum(limits) * seconds / 60 / ROW_TOKENS)
    source = write_input(tmp / f"{name}.jsonl", rows, words=45)
    with ExitStack() as stack:
        deployments = [
            stack.enter_context(deployment(f"d{i}", tpm, headers))
            for i, tpm in enumerate(limits)
        ]
        entries = [
            {"name": d.name, "endpoint": d.url, "deployment": "gpt-4o-mini",
             "api_key_env": f"BENCH_KEY_{d.name.upper()}",
             **({"tpm": d.tpm} if kind in ("given", "kill") else {})}
            for d in deployments
        ]  # fmt: skip
        config = tmp / f"{name}.yaml"
        config.write_text(json.dumps({
            "deployments": entries, "model": "gpt-4o-mini",
            "request": {"max_tokens": MAX_TOKENS},
        }))  # fmt: skip
        env = dict(os.environ, OPENAI_API_VERSION="2024-10-21")
        env.update({f"BENCH_KEY_{d.name.upper()}": d.key for d in deployments})
        out = tmp / f"{name}.results.jsonl"
        cmd = [sys.executable, "-m", "batchrunner", str(source), "-q", "-c",
               str(config), "--log-format", "json", "--concurrency", "64",
               "-o", str(out)]  # fmt: skip
        if kind == "single":
            (only,) = deployments
            config.write_text(json.dumps({
                "model": "gpt-4o-mini", "request": {"max_tokens": MAX_TOKENS},
            }))  # fmt: skip
            env.update(AZURE_OPENAI_ENDPOINT=only.url, AZURE_OPENAI_API_KEY=only.key)
            cmd += ["--deployment", "gpt-4o-mini", "--tpm", str(only.tpm)]
        done = threading.Event()
        killed: list[float] = []
        watcher = None
        if kind == "kill":
            watcher = threading.Thread(
                target=lambda: killed.extend(_watch_and_kill(deployments, rows, done))
            )
            watcher.start()
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        done.set()
        if watcher is not None:
            watcher.join()
        if run.returncode not in (0, 1):
            raise SystemExit(f"{name} failed ({run.returncode}):\n{run.stderr[-2000:]}")
        stats = [d.stats() for d in deployments]
    summary = json.loads((tmp / f"{name}.results.summary.json").read_text())
    return Outcome(name, limits, rows, summary, stats, killed[0] if killed else None)


def _print(outcomes: list[Outcome]) -> None:
    print(f"{'run':11}{'TPM limits':>24}{'rows':>6}{'failed':>7}{'wall s':>8}"
          f"{'limit s':>8}{'TPM used':>9}{'429s':>6}{'429 %':>7}"
          "  target  rows by deployment")  # fmt: skip
    for o in outcomes:
        physical = o.physical()
        used = physical / o.wall if o.wall else 0
        share = o.throttled / o.requests if o.requests else 0
        limits = "+".join(f"{t // 1000}k" for t in o.limits)
        by = " ".join(
            f"{k}:{v['rows_ok']}" + (f"/{v['throttled']}×429" if v["throttled"] else "")
            for k, v in sorted(o.summary.get("deployments", {}).items())
        )
        print(f"{o.name:11}{limits:>24}{o.rows:6}{o.summary['rows_failed']:7}"
              f"{o.wall:8.1f}{physical:8.1f}{used:9.1%}{o.throttled:6}{share:7.1%}"
              f"  {verdict(o):6}  {by}")  # fmt: skip
    print(json.dumps([
        {"name": o.name, "limits": o.limits, "rows": o.rows, "wall": o.wall,
         "physical": round(o.physical(), 2), "requests": o.requests,
         "throttled": o.throttled, "charged": o.charged,
         "rows_failed": o.summary["rows_failed"], "killed_at": o.killed_at,
         "target": verdict(o)}
        for o in outcomes
    ]))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--runs",
        default="given-2,given-4,learned-2,learned-4,remaining-2,remaining-4,kill-4,"
        "single-2,single-4",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        outcomes = []
        for name in args.runs.split(","):
            started = time.monotonic()
            outcomes.append(_one(name, args.seconds, tmp))
            print(f"# {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(f"simulators: 10 s window, 200 ms latency; max_tokens {MAX_TOKENS},"
          " concurrency 64; TPM used = physical limit / wall")  # fmt: skip
    _print(outcomes)


if __name__ == "__main__":
    main()
