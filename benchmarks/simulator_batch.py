"""
The simulator's Batch API at full pace: lines answered a second, and its peak
RSS after a small and after a large batch (files live on disk, so it must stay
flat in the number of lines).

    python -m benchmarks.simulator_batch [--rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import openai

from benchmarks.common import DEPLOYMENT, KEY, ROOT

ENDED = ("completed", "failed", "expired", "cancelled")


def _input(rows: int) -> bytes:
    lines = (
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/chat/completions",
            "body": {
                "model": DEPLOYMENT,
                "messages": [{"role": "user", "content": f"Classify review {i}."}],
                "max_tokens": 50,
            },
        }
        for i in range(rows)
    )
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert match, "no VmHWM in /proc (Linux only)"
    return int(match[1]) / 1024


async def _run(client: openai.AsyncAzureOpenAI, rows: int) -> tuple[float, int]:
    """(seconds from create to completed, bytes of output) of one batch."""
    uploaded = await client.files.create(
        file=("in.jsonl", _input(rows)), purpose="batch"
    )
    started = time.monotonic()
    batch = await client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    while batch.status not in ENDED:
        await asyncio.sleep(0.1)
        batch = await client.batches.retrieve(batch.id)
    elapsed = time.monotonic() - started
    assert batch.status == "completed" and batch.output_file_id
    size = 0
    async with client.files.with_streaming_response.content(
        batch.output_file_id
    ) as answer:
        async for chunk in answer.iter_bytes():
            size += len(chunk)
    return elapsed, size


async def _measure(
    url: str, pid: int, rows: int
) -> list[tuple[int, float, int, float]]:
    """(lines, seconds, output bytes, simulator peak RSS) after each batch."""
    figures = []
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=url, api_key=KEY, api_version="2024-10-21"
    ) as client:
        for n in (max(1, rows // 10), rows):
            elapsed, size = await _run(client, n)
            figures.append((n, elapsed, size, _peak_rss_mb(pid)))
    return figures


def main(rows: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrunner.simulator", "--port", "0",
         "--api-key", KEY, "--batch-lines-per-second", "0",
         "--batch-state-seconds", "0"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
        figures = asyncio.run(_measure(url, proc.pid, rows))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for n, elapsed, size, rss in figures:
        print(
            f"{n:>9,} lines: {n / elapsed:7.0f} lines/s, output {size / 1e6:6.1f} MB,"
            f" simulator peak RSS {rss:5.0f} MB"
        )
    (small, *_, small_rss), (big, *_, big_rss) = figures
    print(f"peak RSS ratio {big:,}/{small:,} lines: {big_rss / small_rss:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    main(parser.parse_args().rows)
