"""
A TPM-limited deployment (short window, ~60 s of work): how close each client
gets to the physical limit, and how many 429s it collects on the way.

    python -m benchmarks.quota [--tpm 60000] [--window 6] [--rows 240]
                               [--runs naive,given,learned,remaining,aimd,overcharged]

Runs, all against the same simulator settings in the same process:
- naive:       asyncio.gather + Semaphore(64) on the SDK (its 2 built-in retries);
- given:       batchrunner --tpm (the budget told);
- learned:     batchrunner with no budget: learned from x-ratelimit-limit-* headers;
- remaining:   no budget, a deployment that sends only x-ratelimit-remaining-*
               (as APIM and Microsoft's simulator do);
- aimd:        no budget, a deployment that sends no rate-limit headers: the
               429s (and their waits) only;
- overcharged: batchrunner --tpm against a service that charges 5% more than
               our estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, run_child, simulator, simulator_stats, write_input

MAX_TOKENS = 200
#: The header set each run's deployment sends (the others send all of them).
HEADERS = {"remaining": "remaining", "aimd": "none"}
#: How much more than our estimate the "overcharged" service counts.
OVERCHARGE = 1.05


def _one(
    name: str, args: argparse.Namespace, tmp: Path, source: Path
) -> dict[str, Any]:
    headers = HEADERS.get(name, "full")
    sim_args = ["--tpm", str(args.tpm), "--window", str(args.window),
                "--latency", "0.2", "--rate-headers", headers]  # fmt: skip
    if name == "overcharged":
        sim_args += ["--charge-factor", str(OVERCHARGE)]
    config = tmp / "config.yaml"
    config.write_text(f"request:\n  max_tokens: {MAX_TOKENS}\nmodel: gpt-4o-mini\n")
    with simulator(*sim_args) as url:
        before = simulator_stats(url)
        if name == "naive":
            cmd = [sys.executable, str(ROOT / "benchmarks" / "naive.py"), str(source),
                   str(tmp / f"{name}.jsonl"), "64", str(MAX_TOKENS)]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "batchrunner", str(source), "-q", "-c",
                   str(config), "--log-format", "json", "--concurrency", "64",
                   "-o", str(tmp / f"{name}.jsonl")]  # fmt: skip
            if name in ("given", "overcharged"):
                cmd += ["--tpm", str(args.tpm)]
        run = run_child(cmd, url, check=False)
        after = simulator_stats(url)
    # The send phase only: start-up (imports, validation) is not quota time.
    if name == "naive":
        wall = json.loads(run.stdout)["send_seconds"]
    else:
        summary = json.loads((tmp / f"{name}.summary.json").read_text())
        wall = summary["elapsed_seconds"]
    requests = after["requests"] - before["requests"]
    throttled = after["statuses"].get("429", 0) - before["statuses"].get("429", 0)
    charged = after["charged_tokens"] - before["charged_tokens"]
    ok = after["statuses"].get("200", 0) - before["statuses"].get("200", 0)
    return {
        "name": name,
        "wall": wall,
        "rows_ok": ok,
        "requests": requests,
        "throttled": throttled,
        "charged": charged,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tpm", type=int, default=60_000)
    parser.add_argument("--window", type=float, default=6.0)
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument(
        "--runs", default="naive,given,learned,remaining,aimd,overcharged"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = write_input(tmp / "job.jsonl", args.rows, words=45)
        results = [_one(name, args, tmp, source) for name in args.runs.split(",")]
    print(f"TPM limit {args.tpm:,} ({args.window:g} s window), {args.rows} rows,"
          f" max_tokens {MAX_TOKENS}, latency 200 ms, concurrency 64")  # fmt: skip
    print(f"{'run':12}{'rows ok':>8}{'wall s':>8}{'limit s':>8}{'wall/limit':>11}"
          f"{'TPM used':>10}{'429s':>6}{'429 %':>7}")  # fmt: skip
    for r in results:
        # The physical limit: the tokens the rows needed, at the TPM rate.
        physical = r["charged"] / args.tpm * 60
        used = r["charged"] / r["wall"] * 60 / args.tpm if r["wall"] else 0
        share = r["throttled"] / r["requests"] if r["requests"] else 0
        ratio = r["wall"] / physical
        print(f"{r['name']:12}{r['rows_ok']:8}{r['wall']:8.1f}{physical:8.1f}"
              f"{ratio:11.2f}{used:10.1%}{r['throttled']:6}{share:7.1%}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
