"""
What a person watching sees: the live display on a terminal, progress events off
one, and the summary table.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import struct
import subprocess
import termios
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.config.prices import answer_price
from batchrunner.config.settings import Settings
from batchrunner.errors import ApiFailure
from batchrunner.records import ErrorInfo, Reply, RowResult, Usage
from batchrunner.report.progress import ProgressDisplay, deployment_lines
from batchrunner.report.summary import RunStats
from batchrunner.report.table import print_summary
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, child_env
from tests.test_cli import prompts, write_jsonl

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _run_in_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run batchrunner with a pseudo-terminal as stdout and stderr; all it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    with subprocess.Popen(
        [PYTHON, "-m", "batchrunner", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
        cwd=cwd,
    ) as child:
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(timeout=60) == 0
    os.close(leader)
    return _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_live_progress_under_a_terminal(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """On a terminal, the display's counters move from the first rows to the total."""
    simulator.config.latency = 0.03
    rows = [*prompts(24), {"id": "retried", "prompt": "x [[sim:429]]"}]
    source = write_jsonl(tmp_path / "p.jsonl", rows)
    env = child_env(simulator, TERM="xterm-256color", COLUMNS="200", LINES="50")
    screen = _run_in_terminal(
        [str(source), "--concurrency", "2", "--tpm", "900000"], env, tmp_path
    )
    done = {int(m) for m in re.findall(r"rows\s.*?(\d+)/25\b", screen)}
    assert 25 in done
    assert done & set(range(1, 25)), "no count short of the total was shown"
    assert "rows/s" in screen
    assert re.search(r"tok/min of 900\.0k", screen)
    assert "retries 1 · 429s 1" in screen
    assert "batchrunner summary" in screen
    assert re.search(r"rows ok\s+25", screen)


def test_json_progress_lines_parse(
    azure_env: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Off a terminal, progress events are JSON lines carrying the counters."""
    monkeypatch.setenv("BATCHRUNNER_PROGRESS_INTERVAL", "0.001")
    rows = [*prompts(20), {"id": "bad", "prompt": "BLOCKME"}]
    source = write_jsonl(tmp_path / "j.jsonl", rows)
    assert run([str(source), "--concurrency", "2", "--log-format", "json"]) == 1
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress
    done = [e["rows_done"] for e in progress]
    assert done == sorted(done)
    last = progress[-1]
    assert last["rows_done"] == last["rows_total"] == 21
    assert last["rows_ok"] == 20
    assert last["rows_failed"] == 1
    for key in ("retries", "throttled", "tokens_per_minute", "rows_per_second"):
        assert isinstance(last[key], int | float)
    assert last["eta_seconds"] == 0


def _result(row_id: str, ok: bool, latency: int) -> RowResult:
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    reply = Reply("hi", None, "stop", usage, "gpt-4o-mini", "req", latency)
    error = ErrorInfo("BadRequestError", 400, "content_filter", "filtered " * 40)
    return RowResult(
        id=row_id,
        status="ok" if ok else "error",
        reply=reply if ok else None,
        error=None if ok else error,
        attempts=1,
        latency_ms=latency,
        request_id="req",
    )


def test_summary_table_shows_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The table has counts, tokens, cost, throughput, latencies and error examples."""
    price = partial(answer_price, Settings())
    stats = RunStats(rows_planned=20, rows_skipped=3, price_for=price)
    for i in range(20):
        stats.note_attempt(
            ApiFailure(kind="x", message="", status_code=429) if i else None
        )
        stats.add(_result(str(i), ok=i % 10 != 0, latency=100 + i))
    stream = io.StringIO()
    print_summary(stats.as_dict(elapsed=4.0), json_lines=False, stream=stream)
    text = stream.getvalue()
    for pattern in (
        r"rows ok\s+18",
        r"rows failed\s+2",
        r"rows skipped \(done before\)\s+3",
        r"requests / retries / 429s\s+20 / 0 / 19",
        r"tokens in / out\s+180 / 90",
        r"estimated cost\s+\$0\.000081",
        r"throughput\s+5\.0 rows/s, 4,050 tokens/min",
        r"latency p50 / p95\s+109 ms / 118 ms",
        r"error 400 content_filter\s+2 × e\.g\. row 0: filtered",
    ):
        assert re.search(pattern, text), pattern
    assert "…" in text  # the long example is cut


def test_batch_progress_events_count_batches_not_rates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Off a terminal, batch mode's progress names batches and rows, no rate or eta."""
    stats = RunStats(rows_planned=10)
    stats.batches = Counter(submitted=2, running=1, completed=1)
    stats.rows_ok = 4
    display = ProgressDisplay(10, bar=False, batches=True, clock=lambda: 5.0)
    display.update(stats)
    with caplog.at_level("INFO", logger="batchrunner"):
        display.close()
    (event,) = caplog.records
    line = event.getMessage()
    assert line == "batches 1 running, 1 ended, 2 submitted; 4/10 rows done, 0 failed"
    assert event.__dict__["batches"]["running"] == 1


def _two_deployments() -> RunStats:
    """A run's counters after rows on two deployments, one with 429s and a failure."""
    stats = RunStats(rows_planned=5)
    throttled = ApiFailure(kind="RateLimitError", message="", status_code=429)
    stats.note_attempt(throttled, "east")
    for row_id, label in (("1", "east"), ("2", "west"), ("3", "west")):
        stats.note_attempt(None, label)
        stats.add(replace(_result(row_id, ok=True, latency=5), deployment=label))
    stats.note_attempt(ApiFailure(kind="x", message="", status_code=400), "west")
    stats.add(replace(_result("4", ok=False, latency=5), deployment="west"))
    return stats


def test_the_progress_line_breaks_the_counts_down_by_deployment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Off a terminal, the progress line names each deployment's rows, requests,
    tokens, 429s and errors; the JSON event carries the same figures."""
    display = ProgressDisplay(5, bar=False, interval=0)
    with caplog.at_level(logging.INFO, logger="batchrunner"):
        display.update(_two_deployments())
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "progress"]
    line = record.getMessage()
    assert "east 1 ok, 2 req, 15 tok, 1 429s, 0 err" in line
    assert "west 2 ok, 3 req, 30 tok, 0 429s, 1 err, 1 failed" in line
    assert record.deployments["west"]["errors"] == 1  # type: ignore[attr-defined]


def test_the_live_display_breaks_the_counts_down_by_deployment() -> None:
    """On a terminal, a line under the bar for each deployment, with its figures."""
    stream = io.StringIO()
    display = ProgressDisplay(5, bar=True, stream=stream)
    display.update(_two_deployments())
    display.close()
    lines = [line.strip() for line in stream.getvalue().splitlines()]
    assert "east 1 ok, 2 req, 15 tok, 1 429s, 0 err" in lines
    assert "west 2 ok, 3 req, 30 tok, 0 429s, 1 err, 1 failed" in lines


def test_one_deployment_adds_nothing_to_the_progress_line() -> None:
    """A run on one deployment keeps the short line."""
    stats = RunStats(rows_planned=1)
    stats.note_attempt(None, "only")
    stats.add(replace(_result("1", ok=True, latency=5), deployment="only"))
    assert deployment_lines(stats) == []
