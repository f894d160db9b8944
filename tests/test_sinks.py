"""Tests for the results sinks: JSONL, CSV and Parquet, appended to and resumed."""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchrunner.errors import UsageError
from batchrunner.records import ErrorInfo, Reply, RowResult, Usage, to_record
from batchrunner.results.frame import read_results
from batchrunner.results.layout import (
    FIXED_COLUMNS,
)
from batchrunner.results.resume import read_state
from batchrunner.results.sinks import open_sink
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, child_env
from tests.test_cli import prompts, read_jsonl, write_csv

FORMATS = [".jsonl", ".csv", ".parquet"]


def ok(row_id: str, output: Any = "fine", **passthrough: Any) -> dict[str, Any]:
    """A successful chat record, built the way the pool builds it."""
    reply = Reply(
        output=output,
        embedding=None,
        finish_reason="stop",
        usage=Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15),
        model="gpt-4o-mini",
        request_id=f"req-{row_id}",
        latency_ms=250,
    )
    result = RowResult(row_id, "ok", reply, None, 1, 250, f"req-{row_id}", passthrough)
    return to_record(result)


def failed(row_id: str, **passthrough: Any) -> dict[str, Any]:
    """A failed row's record."""
    error = ErrorInfo("rate_limited", 429, "429", "Too many requests, try later")
    result = RowResult(row_id, "error", None, error, 4, 40, None, passthrough)
    return to_record(result)


def embedded(row_id: str, vector: list[float]) -> dict[str, Any]:
    """A successful embeddings record."""
    reply = Reply(None, vector, None, Usage(5, 0, 5), "text-embedding-3-small", "r", 9)
    return to_record(RowResult(row_id, "ok", reply, None, 2, 9, "r", {}))


def write_all(path: Path, *batches: list[dict[str, Any]]) -> None:
    """Open a sink on *path*, write *batches*, close it."""
    sink = open_sink(path)
    for batch in batches:
        sink.write(batch)
    sink.close()


def ids(path: Path) -> list[str]:
    """The ids read_results returns for *path*, in order."""
    return list(read_results(path)["id"])


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_keeps_every_field(tmp_path: Path, suffix: str) -> None:
    """What goes in comes back out through read_results, whatever the format."""
    path = tmp_path / f"out{suffix}"
    tricky = 'line one\nline two, with "quotes"\r\nand a carriage\rreturn'
    write_all(path, [ok("1", tricky, topic="maths"), failed("2", topic="art")])
    frame = read_results(path)
    assert list(frame.columns) == [*FIXED_COLUMNS, "input_topic"]
    first, second = frame.to_dict("records")
    assert first["output"] == tricky
    assert first["usage_total_tokens"] == 15
    assert first["input_topic"] == "maths"
    assert second["error_message"] == "Too many requests, try later"
    assert second["error_status_code"] == 429
    assert frame["attempts"].tolist() == [1, 4]
    assert str(frame["attempts"].dtype) == "int64"
    assert str(frame["usage_total_tokens"].dtype) == "Int64"


@pytest.mark.parametrize("suffix", FORMATS)
def test_unicode_survives(tmp_path: Path, suffix: str) -> None:
    """Non-ASCII text, ids and input values round-trip unchanged."""
    path = tmp_path / f"out{suffix}"
    text = "Grüße, 東京 🚀 — «ok»"
    write_all(path, [ok("é-1", text, note="naïve")])
    record = read_results(path).to_dict("records")[0]
    assert (record["id"], record["output"], record["input_note"]) == (
        "é-1",
        text,
        "naïve",
    )


def test_jsonl_is_plain_utf8(tmp_path: Path) -> None:
    """JSONL holds UTF-8 text rather than \\u escapes, one compact record a line."""
    path = tmp_path / "out.jsonl"
    write_all(path, [ok("1", "café")])
    data = path.read_bytes()
    assert "café".encode() in data
    assert data.endswith(b"}\n")
    assert data.count(b"\n") == 1
    assert b": " not in data


def test_jsonl_lone_surrogate_is_escaped(tmp_path: Path) -> None:
    """A lone surrogate from a broken escape is written as \\ud800, not a crash."""
    path = tmp_path / "out.jsonl"
    write_all(path, [ok("1", "bad \ud800 text")])
    assert json.loads(path.read_text(encoding="utf-8"))["output"] == "bad \ud800 text"


@pytest.mark.parametrize("suffix", FORMATS)
def test_second_opening_appends(tmp_path: Path, suffix: str) -> None:
    """A sink opened on an existing file adds to it, as a resumed run must."""
    path = tmp_path / "deep" / "dir" / f"out{suffix}"
    write_all(path, [ok("1"), ok("2")])
    write_all(path, [ok("3")], [ok("4")])
    assert ids(path) == ["1", "2", "3", "4"]
    assert read_state(path).records == 4


@pytest.mark.parametrize("suffix", FORMATS)
def test_last_record_of_an_id_wins(tmp_path: Path, suffix: str) -> None:
    """A row that failed and then succeeded reads back as its success."""
    path = tmp_path / f"out{suffix}"
    write_all(path, [failed("1"), ok("2")])
    write_all(path, [ok("1", "second try")])
    frame = read_results(path)
    assert list(frame["id"]) == ["2", "1"]
    assert frame.set_index("id").loc["1", "output"] == "second try"


@pytest.mark.parametrize("suffix", FORMATS)
def test_write_flushes_before_close(tmp_path: Path, suffix: str) -> None:
    """Each batch reaches the OS before write returns, close or no close."""
    path = tmp_path / f"out{suffix}"
    sink = open_sink(path)
    sink.write([ok("1")])
    assert read_state(path).done_ids == {"1"}
    sink.close()
    sink.close()


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_second_writer_is_refused(tmp_path: Path, suffix: str) -> None:
    """Two sinks on one file at once would cut each other's records."""
    path = tmp_path / f"out{suffix}"
    first = open_sink(path)
    with pytest.raises(UsageError, match="another batchrunner run"):
        open_sink(path)
    first.close()
    open_sink(path).close()


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    """An output whose suffix names no format is a clear error."""
    with pytest.raises(ValueError, match=r"\.jsonl, \.csv or \.parquet"):
        open_sink(tmp_path / "out.txt")


def test_jsonl_torn_half_line_is_cut(tmp_path: Path) -> None:
    """A half-written last line is dropped; the next record lands on its own line."""
    path = tmp_path / "out.jsonl"
    write_all(path, [ok("1")])
    with path.open("ab") as file:
        file.write(b'{"id":"2","status":"ok","outp')
    write_all(path, [ok("3")])
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "3"]


def test_jsonl_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    """A record that lost only its newline in a crash counts, and gets it back."""
    path = tmp_path / "out.jsonl"
    path.write_text(json.dumps(ok("1")))
    assert read_state(path).done_ids == {"1"}
    write_all(path, [ok("2")])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [
        "1",
        "2",
    ]


def test_jsonl_foreign_file_is_not_wiped(tmp_path: Path) -> None:
    """A .jsonl file with no JSON object lines is refused rather than truncated."""
    path = tmp_path / "out.jsonl"
    path.write_text("hello\nworld\n")
    with pytest.raises(UsageError, match="not a JSONL results file"):
        open_sink(path)
    assert path.read_text() == "hello\nworld\n"


def test_csv_layout(tmp_path: Path) -> None:
    """CSV has the fixed columns then input ones, JSON for lists, "" for nulls."""
    path = tmp_path / "out.csv"
    write_all(path, [ok("1", ["a", "b"], lang="en"), embedded("2", [0.5, -1.25])])
    header, first, second = path.read_text(encoding="utf-8").splitlines()
    assert header.split(",") == [*FIXED_COLUMNS, "input_lang"]
    assert first.startswith('1,ok,"[""a"",""b""]",,stop,12,3,15,,,gpt-4o-mini,1,250,')
    assert second.startswith('2,ok,,"[0.5,-1.25]",,5,0,5,')
    assert read_results(path)["embedding"].tolist() == [None, [0.5, -1.25]]


def test_csv_append_keeps_header_and_drops_new_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Appending keeps the file's header; new columns are dropped with one warning."""
    path = tmp_path / "out.csv"
    write_all(path, [ok("1", lang="en")])
    with caplog.at_level(logging.WARNING, logger="batchrunner.results.sinks"):
        write_all(path, [ok("2", lang="fr", extra="x")], [ok("3", extra="y")])
    warnings = [r for r in caplog.records if "input_extra" in r.getMessage()]
    assert len(warnings) == 1
    frame = read_results(path)
    assert list(frame.columns) == [*FIXED_COLUMNS, "input_lang"]
    assert frame["input_lang"].tolist()[:2] == ["en", "fr"]


CSV_TEARS = {
    "half record": b'2,ok,"hel',
    "unquoted half field": b"2,ok,hello,,st",
    "inside a quoted multi-line field": b'2,ok,"first line\nsecond li',
    "right after an embedded newline": b'2,ok,"first line\n',
    "just before the record's newline": b"2,ok," + b"," * (len(FIXED_COLUMNS) - 3),
}


@pytest.mark.parametrize("tail", CSV_TEARS.values(), ids=CSV_TEARS.keys())
def test_csv_torn_tail_is_cut(tmp_path: Path, tail: bytes) -> None:
    """A CSV record cut short by a crash is dropped; the next one lands intact."""
    path = tmp_path / "out.csv"
    write_all(path, [ok("1", "multi\nline")])
    intact = path.read_bytes()
    with path.open("ab") as file:
        file.write(tail)
    assert read_state(path).torn_bytes == len(tail)
    write_all(path, [ok("3", "after\nthe tear")])
    assert path.read_bytes().startswith(intact)
    assert ids(path) == ["1", "3"]
    assert read_results(path)["output"].tolist() == ["multi\nline", "after\nthe tear"]


def test_csv_torn_header_is_rewritten(tmp_path: Path) -> None:
    """A header cut short before any record is dropped and written afresh."""
    path = tmp_path / "out.csv"
    path.write_bytes(b"id,status,out")
    write_all(path, [ok("1")])
    assert path.read_text().startswith(",".join(FIXED_COLUMNS) + "\n")
    assert ids(path) == ["1"]


def test_csv_damage_in_the_middle_is_refused(tmp_path: Path) -> None:
    """A broken record before the end cannot be mended by cutting: it is an error."""
    path = tmp_path / "out.csv"
    write_all(path, [ok("1")])
    complete = b"3,ok" + b"," * (len(FIXED_COLUMNS) - 2) + b"\n"
    with path.open("ab") as file:
        file.write(b"2,ok\n" + complete)
    with pytest.raises(UsageError, match=r"out\.csv:3: damaged results record"):
        open_sink(path)


def test_csv_foreign_header_is_refused(tmp_path: Path) -> None:
    """A CSV without id and status columns is not taken for results."""
    path = tmp_path / "out.csv"
    path.write_text("name,age\nann,3\n")
    with pytest.raises(UsageError, match="not a CSV results file"):
        open_sink(path)


def _limit_file_size() -> None:
    """In the child: no file may grow past 8 KiB (writes past it get EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_results_storage_filling_up_stops_resumably(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """A full disk is exit 75 and one line, not a traceback; the re-run finishes."""
    source = write_csv(tmp_path / "job.csv", prompts(60))
    command = [PYTHON, "-m", "batchrunner", str(source), "--log-format", "text"]
    # No bytecode: the size limit would cut .pyc files short.
    env = child_env(simulator, PYTHONDONTWRITEBYTECODE="1")
    full = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert full.returncode == 75, full.stderr
    assert "Traceback" not in full.stderr
    assert "cannot write the results to" in full.stderr
    assert "re-run the same command to go on" in full.stderr
    again = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert again.returncode == 0, again.stderr
    ids = [record["id"] for record in read_jsonl(tmp_path / "job.results.jsonl")]
    assert sorted(ids) == sorted(row["id"] for row in prompts(60))
