"""
--log-format json as a log collector reads it: JSON objects only, each with the
run's id, shard and counters, and no prompt text unless asked for.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, SECRET_KEY, child_env
from tests.test_cli import write_jsonl

MARKER = "PROMPT-TEXT-7f3a"
REQUIRED = {"time", "level", "event", "message", "run_id", "shard", "counters"}


def job(tmp_path: Path) -> Path:
    """Six plain rows, one retried, one filtered: every kind of row event."""
    rows = [{"id": f"r{i}", "prompt": f"{MARKER} {i}"} for i in range(6)]
    rows += [
        {"id": "retried", "prompt": f"{MARKER} [[sim:500]]"},
        {"id": "filtered", "prompt": f"{MARKER} BLOCKME"},
    ]
    return write_jsonl(tmp_path / "job.jsonl", rows)


def run_json(
    simulator: SimulatorServer, tmp_path: Path, *args: str
) -> tuple[bytes, list[dict[str, Any]]]:
    """Run batchrunner -v in JSON mode as a replica of an Indexed Job of one."""
    done = subprocess.run(
        [PYTHON, "-m", "batchrunner", str(job(tmp_path)), "-v", *args],
        env=child_env(simulator, JOB_COMPLETION_INDEX="0", BATCHRUNNER_SHARDS="1"),
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr.decode()
    return done.stdout, [json.loads(line) for line in done.stderr.splitlines()]


def test_every_line_is_an_object_with_the_run_fields(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """stdout stays empty; each stderr line parses and names run, shard, counters."""
    stdout, events = run_json(simulator, tmp_path, "--log-format", "json")
    assert stdout == b""
    assert all(event.keys() >= REQUIRED for event in events)
    assert len({event["run_id"] for event in events}) == 1
    assert {event["shard"] for event in events} == {"0/1"}
    kinds = {event["event"] for event in events}
    assert {"start", "retry", "row", "summary"} <= kinds
    rows = [event for event in events if event["event"] == "row"]
    assert sorted(event["id"] for event in rows) == [
        "filtered", "r0", "r1", "r2", "r3", "r4", "r5", "retried",
    ]  # fmt: skip
    last = events[-1]["counters"]
    assert (last["rows_done"], last["rows_ok"], last["rows_failed"]) == (8, 7, 1)
    text = json.dumps(events)
    assert MARKER not in text
    assert SECRET_KEY not in text


def test_prompts_are_logged_only_when_asked(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """log_prompts: true puts each row's prompt and answer in its row event."""
    (tmp_path / "config.yaml").write_text("log_prompts: true\nlog_format: json\n")
    _, events = run_json(simulator, tmp_path)
    rows = {event["id"]: event for event in events if event["event"] == "row"}
    assert rows["r1"]["prompt"] == [{"role": "user", "content": f"{MARKER} 1"}]
    assert rows["r1"]["output"]
    assert rows["filtered"]["error"] == "400 content_filter"


def test_dry_run_and_early_errors_are_events_too(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In JSON mode a dry run, a bad flag and a bad settings file are JSON lines."""
    source = job(tmp_path)
    assert run([str(source), "--dry-run", "--log-format", "json"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    (estimate,) = [json.loads(line) for line in err.splitlines()]
    assert estimate["event"] == "estimate"
    assert estimate["rows"] == 8
    with pytest.raises(SystemExit) as info:
        run([str(source), "--concurrency", "lots", "--log-format", "json"])
    assert info.value.code == 2
    (bad_flag,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (bad_flag["level"], bad_flag["exit_code"]) == ("error", 2)
    assert "--concurrency" in bad_flag["message"]
    assert run([str(source), "-c", "missing.yaml", "--log-format", "json"]) == 2
    (bad_file,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert "missing.yaml" in bad_file["message"]
