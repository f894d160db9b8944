"""
End to end: the command against the simulator, with the real SDK over HTTP.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from batchrunner.cli import run
from batchrunner.results.frame import read_results
from batchrunner.simulator import SimulatorServer
from tests.conftest import SECRET_KEY


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write *rows* as a CSV file with a header."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write *rows* as JSONL."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL results file."""
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def prompts(n: int, prefix: str = "Question") -> list[dict[str, Any]]:
    """*n* rows with ids and prompts that name their row."""
    return [
        {"id": f"r{i}", "prompt": f"{prefix} number {i}?", "topic": "t"}
        for i in range(n)
    ]


def test_chat_job_writes_one_ok_record_per_row(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV of prompts becomes ok records with usage, and a summary."""
    source = write_csv(tmp_path / "job.csv", prompts(12))
    assert run([str(source)]) == 0
    records = read_jsonl(tmp_path / "job.results.jsonl")
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(12))
    first = records[0]
    assert first["status"] == "ok"
    assert first["output"]
    assert first["finish_reason"] == "stop"
    assert first["usage"]["prompt_tokens"] > 0
    assert first["usage"]["total_tokens"] == (
        first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )
    assert first["model"] == "gpt-4o-mini-2024-07-18"
    assert first["attempts"] == 1
    assert first["request_id"]
    assert first["input"] == {"topic": "t"}
    summary = json.loads((tmp_path / "job.results.summary.json").read_text())
    assert summary["rows_ok"] == 12
    assert summary["requests"] == 12
    assert summary["tokens"]["total"] == sum(
        r["usage"]["total_tokens"] for r in records
    )
    assert azure_env.ledger.count() == 12


def test_completions_api(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """--api completions sends prompts to an instruct deployment."""
    source = write_jsonl(tmp_path / "c.jsonl", prompts(3))
    code = run(
        [str(source), "--api", "completions", "--deployment", "gpt-35-turbo-instruct"]
    )
    assert code == 0
    records = read_jsonl(tmp_path / "c.results.jsonl")
    assert all(r["status"] == "ok" and r["output"] for r in records)
    assert {e.operation for e in azure_env.ledger.entries} == {"completions"}


def test_embeddings_api(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """--api embeddings records the vector, decoded from the SDK's base64."""
    source = write_jsonl(tmp_path / "e.jsonl", prompts(3))
    code = run(
        [str(source), "--api", "embeddings", "--deployment", "text-embedding-3-small"]
    )
    assert code == 0
    records = read_jsonl(tmp_path / "e.results.jsonl")
    vector = records[0]["embedding"]
    assert len(vector) == 1536
    assert sum(v * v for v in vector) == pytest.approx(1.0, rel=1e-3)
    assert "output" not in records[0]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_output_formats(
    azure_env: SimulatorServer, tmp_path: Path, suffix: str
) -> None:
    """CSV and Parquet results hold the same rows, usage flattened."""
    source = write_csv(tmp_path / "job.csv", prompts(5))
    output = tmp_path / f"out{suffix}"
    assert run([str(source), "-o", str(output)]) == 0
    frame = read_results(output)
    assert sorted(frame["id"]) == sorted(f"r{i}" for i in range(5))
    assert (frame["status"] == "ok").all()
    assert (frame["usage_total_tokens"] > 0).all()
    assert (tmp_path / "out.summary.json").exists()
    if suffix == ".parquet":
        assert pd.api.types.is_integer_dtype(pd.read_parquet(output)["attempts"])


def test_gzip_and_stdin_inputs(
    azure_env: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.jsonl.gz files and '-' (JSONL on stdin) are read."""
    gz = tmp_path / "g.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in prompts(2))
    assert run([str(gz)]) == 0
    assert len(read_jsonl(tmp_path / "g.results.jsonl")) == 2

    import io
    import sys

    data = "".join(json.dumps(r) + "\n" for r in prompts(3, "Piped"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    assert run(["-", "-o", str(tmp_path / "piped.jsonl")]) == 0
    assert len(read_jsonl(tmp_path / "piped.jsonl")) == 3


def test_each_retry_class_ends_ok(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """429 (its wait honoured), 5xx, a reset and a timeout all retry to ok."""
    rows = [
        {"id": "throttled", "prompt": "a [[sim:429]]"},
        {"id": "server", "prompt": "b [[sim:500,503]]"},
        {"id": "gateway", "prompt": "c [[sim:502,408]]"},
        {"id": "reset", "prompt": "d [[sim:reset]]"},
        {"id": "slow", "prompt": "e [[sim:slow]]"},
    ]
    source = write_jsonl(tmp_path / "r.jsonl", rows)
    assert run([str(source), "--timeout", "1"]) == 0
    attempts = {
        r["id"]: r["attempts"] for r in read_jsonl(tmp_path / "r.results.jsonl")
    }
    assert attempts == {
        "throttled": 2,
        "server": 3,
        "gateway": 3,
        "reset": 2,
        "slow": 2,
    }
    throttled = [e for e in azure_env.ledger.entries if e.prompt.startswith("a ")]
    assert [e.status for e in throttled] == [429, 200]
    # The service asked for 50 ms; the retry must not come sooner.
    assert throttled[1].time - throttled[0].time >= 0.05
    summary = json.loads((tmp_path / "r.results.summary.json").read_text())
    assert summary["throttled"] == 1
    assert summary["retries"] == 7


def test_content_filter_is_sent_once_and_recorded(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A 400 content_filter is the row's error, with no retry; the run exits 1."""
    rows = [
        {"id": "bad", "prompt": "please BLOCKME now"},
        {"id": "good", "prompt": "hi"},
    ]
    source = write_jsonl(tmp_path / "f.jsonl", rows)
    assert run([str(source)]) == 1
    records = {r["id"]: r for r in read_jsonl(tmp_path / "f.results.jsonl")}
    assert records["good"]["status"] == "ok"
    error = records["bad"]["error"]
    assert records["bad"]["status"] == "error"
    assert error["status_code"] == 400
    assert error["code"] == "content_filter"
    assert error["type"] == "BadRequestError"
    assert records["bad"]["attempts"] == 1
    assert sum("BLOCKME" in e.prompt for e in azure_env.ledger.entries) == 1


def test_output_filter_finish_reason(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """An answer cut by the output filter is ok with finish_reason content_filter."""
    source = write_jsonl(tmp_path / "f.jsonl", [{"id": "x", "prompt": "REDACTME"}])
    assert run([str(source)]) == 0
    (record,) = read_jsonl(tmp_path / "f.results.jsonl")
    assert record["finish_reason"] == "content_filter"


def test_rows_over_the_whole_quota_fail_at_once_unsent(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A max_tokens above a minute's quota fails rows without sending or waiting."""
    azure_env.config.tpm = 6_000
    config = tmp_path / "config.yaml"
    config.write_text("request:\n  max_tokens: 10000\n")
    source = write_jsonl(tmp_path / "q.jsonl", prompts(30))
    assert run([str(source), "-c", str(config), "--concurrency", "2"]) == 1
    # Only the first requests are sent (the pacer's initial window, here the
    # concurrency): their answers (429s) tell the quota, and those rows fail at
    # once too, without waiting out the 429.
    assert azure_env.ledger.count() == azure_env.ledger.count(429) <= 2
    records = read_jsonl(tmp_path / "q.results.jsonl")
    assert {r["error"]["type"] for r in records} == {"OverQuota"}
    assert sum(r["attempts"] for r in records) == azure_env.ledger.count()
    assert len(records) >= 10  # then the run stops: every row fails the same way
    assert "can never be sent" in records[0]["error"]["message"]
    assert "stopping rather than burning through the file" in capsys.readouterr().err


def test_wrong_key_exits_3_and_never_leaks(
    azure_env: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused key ends the run with exit 3, and the key is in no output."""
    wrong = "sk-wrong-key-that-must-not-leak-42"
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", wrong)
    source = write_jsonl(tmp_path / "k.jsonl", prompts(50))
    assert run([str(source), "-v", "--concurrency", "2"]) == 3
    assert azure_env.ledger.count() <= 3
    out, err = capsys.readouterr()
    assert "401" in err
    for text in (out, err, *(p.read_text() for p in tmp_path.glob("k.results*"))):
        assert wrong not in text


def test_secret_key_never_printed(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key appears in no log line, result or summary, in either format."""
    rows = [
        *prompts(3),
        {"id": "e", "prompt": "x BLOCKME"},
        {"id": "s", "prompt": "[[sim:500]]"},
    ]
    source = write_jsonl(tmp_path / "s.jsonl", rows)
    for log_format in ("text", "json"):
        run([str(source), "-v", "--fresh", "--log-format", log_format])
    out, err = capsys.readouterr()
    assert err
    for text in (out, err, *(p.read_text() for p in tmp_path.glob("s.results*"))):
        assert SECRET_KEY not in text


def test_json_logs_are_one_object_a_line(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--log-format json: every stderr line parses, the summary is an event."""
    rows = [*prompts(3), {"id": "slow", "prompt": "[[sim:500]]"}]
    source = write_jsonl(tmp_path / "j.jsonl", rows)
    assert run([str(source), "--log-format", "json"]) == 0
    _, err = capsys.readouterr()
    events = [json.loads(line) for line in err.splitlines()]
    assert all({"time", "level", "event", "message"} <= e.keys() for e in events)
    assert "retry" in {e["event"] for e in events}
    (summary,) = [e for e in events if e["event"] == "summary"]
    assert summary["summary"]["rows_ok"] == 4


def test_resume_sends_only_rows_without_ok(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A re-run retries failed rows and never re-sends an ok row."""
    rows = [*prompts(4), {"id": "flaky", "prompt": "[[sim:500,500]]"}]
    source = write_jsonl(tmp_path / "r.jsonl", rows)
    assert run([str(source), "--max-attempts", "2"]) == 1
    assert run([str(source), "--max-attempts", "2"]) == 0
    records = read_jsonl(tmp_path / "r.results.jsonl")
    assert [r["id"] for r in records if r["status"] == "ok"].count("flaky") == 1
    assert len(records) == 6  # five first records, then flaky's ok
    assert azure_env.ledger.count() == 4 + 2 + 1
    summary = json.loads((tmp_path / "r.results.summary.json").read_text())
    assert summary["rows_skipped"] == 4


def test_fresh_keeps_a_backup_and_resends(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """--fresh moves the old results aside and sends every row again."""
    source = write_jsonl(tmp_path / "f.jsonl", prompts(3))
    assert run([str(source)]) == 0
    assert run([str(source), "--fresh"]) == 0
    assert azure_env.ledger.count() == 6
    assert len(list(tmp_path.glob("f.results.jsonl.bak-*"))) == 1
    assert len(read_jsonl(tmp_path / "f.results.jsonl")) == 3


def test_limit_and_shard(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """--limit takes the first rows; --shard splits them between replicas."""
    source = write_jsonl(tmp_path / "s.jsonl", prompts(40))
    assert run([str(source), "--limit", "5", "-o", str(tmp_path / "l.jsonl")]) == 0
    assert [r["id"] for r in read_jsonl(tmp_path / "l.jsonl")] != []
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "l.jsonl")) == sorted(
        f"r{i}" for i in range(5)
    )
    seen: list[str] = []
    for index in range(3):
        out = tmp_path / f"shard{index}.jsonl"
        assert run([str(source), "--shard", f"{index}/3", "-o", str(out)]) == 0
        seen += [r["id"] for r in read_jsonl(out)]
    assert sorted(seen) == sorted(f"r{i}" for i in range(40))


def test_tpm_paces_requests(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """--tpm spaces requests so that the service's token rate stays under it."""
    config = tmp_path / "config.yaml"
    config.write_text("request:\n  max_tokens: 100\n")
    source = write_jsonl(tmp_path / "t.jsonl", prompts(6))
    # Each request is charged ~110 tokens; 6600 tpm allows one every ~1 s.
    assert run([str(source), "--tpm", "6600", "--concurrency", "6"]) == 0
    times = sorted(e.time for e in azure_env.ledger.entries)
    assert times[-1] - times[0] >= 4.0


def test_dry_run_sends_nothing(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run counts tokens and prices the job without a request."""
    source = write_jsonl(tmp_path / "d.jsonl", prompts(4))
    assert run([str(source), "--dry-run", "--log-format", "text"]) == 0
    out, _ = capsys.readouterr()
    assert "rows to send     4" in out
    assert "prompt tokens" in out
    assert azure_env.ledger.count() == 0
    assert not (tmp_path / "d.results.jsonl").exists()


def test_simulate_needs_no_azure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--simulate runs a job with no endpoint, key or deployment set."""
    source = write_csv(tmp_path / "s.csv", prompts(3))
    assert run([str(source), "--simulate"]) == 0
    assert len(read_jsonl(tmp_path / "s.results.jsonl")) == 3


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("bad-json.jsonl", b'{"prompt": "ok"}\n{"prompt": oops}\n', "bad-json.jsonl:2:"),
    ("dup.csv", b"id,prompt\na,x\nb,y\na,z\n", "dup.csv:4"),
    ("nocol.csv", b"id,question\n1,x\n", "nocol.csv:1"),
    ("bytes.csv", b"id,prompt\n1,caf\xe9\n", "bytes.csv:2:"),
    ("msgs.csv", b'id,messages\n1,"[{""role"": ""user""}"\n', "msgs.csv:2"),
]


@pytest.mark.parametrize(("name", "content", "where"), BAD_INPUTS)
def test_bad_input_exits_2_naming_the_place(
    azure_env: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: bytes,
    where: str,
) -> None:
    """Bad input: exit 2, a message with file and line, and nothing sent."""
    (tmp_path / name).write_bytes(content)
    assert run([str(tmp_path / name)]) == 2
    _, err = capsys.readouterr()
    assert where in err
    assert "Traceback" not in err
    assert azure_env.ledger.count() == 0


def test_template_placeholder_without_column(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A template naming a missing column is refused before sending."""
    (tmp_path / "config.yaml").write_text("input:\n  template: 'Summarise {body}'\n")
    source = write_csv(tmp_path / "t.csv", [{"id": "1", "text": "x"}])
    assert run([str(source)]) == 2
    _, err = capsys.readouterr()
    assert "body" in err
    assert azure_env.ledger.count() == 0


def test_bad_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown options and bad values are usage errors."""
    with pytest.raises(SystemExit) as info:
        run(["x.csv", "--api", "images"])
    assert info.value.code == 2
    assert run(["missing.csv", "--simulate"]) == 2
    assert run(["x.csv", "--shard", "5/2"]) == 2


def test_changed_input_is_validated_again(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-run trusts an unchanged input's validation, but not an edited one."""
    source = write_jsonl(tmp_path / "v.jsonl", prompts(3))
    assert run([str(source)]) == 0
    assert list((tmp_path / "state" / "validated").glob("*.json"))
    with source.open("a") as f:
        f.write('{"id": "r0", "prompt": "a duplicate"}\n')
    assert run([str(source)]) == 2
    _, err = capsys.readouterr()
    assert "v.jsonl:4" in err
    assert azure_env.ledger.count() == 3
