"""Tests for reading back what an earlier run left: resume state and results."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from batchrunner.records import ErrorInfo, Reply, RowResult, Usage, to_record
from batchrunner.results.frame import read_results
from batchrunner.results.jsonl import JsonlSink
from batchrunner.results.layout import journal_path
from batchrunner.results.resume import ResumeState, read_state
from batchrunner.results.sinks import open_sink

FORMATS = [".jsonl", ".csv", ".parquet"]


def record(row_id: str, status: str = "ok", output: str = "fine") -> dict[str, Any]:
    """A results record with *status*, built the way the pool builds it."""
    if status == "error":
        error = ErrorInfo("server_error", 500, None, "boom")
        return to_record(RowResult(row_id, "error", None, error, 3, 7, None))
    reply = Reply(output, None, "stop", Usage(4, 2, 6), "gpt-4o", "req", 120)
    return to_record(RowResult(row_id, "ok", reply, None, 1, 120, "req", {"k": "v"}))


def write_all(path: Path, *batches: list[dict[str, Any]]) -> None:
    """Open a sink on *path*, write *batches*, close it."""
    sink = open_sink(path)
    for batch in batches:
        sink.write(batch)
    sink.close()


def data_file(path: Path) -> Path:
    """The file the sink for *path* appends to (the journal, for Parquet)."""
    return journal_path(path) if path.suffix == ".parquet" else path


@pytest.mark.parametrize("suffix", FORMATS)
def test_missing_file_is_a_fresh_start(tmp_path: Path, suffix: str) -> None:
    """No results file means nothing is done yet."""
    assert read_state(tmp_path / f"none{suffix}") == ResumeState()


@pytest.mark.parametrize("suffix", FORMATS)
def test_ok_error_and_retried_rows(tmp_path: Path, suffix: str) -> None:
    """Ok rows are done, failed rows with no ok are retried, each record counts."""
    path = tmp_path / f"out{suffix}"
    write_all(
        path,
        [record("a"), record("b", "error"), record("c", "error")],
        [record("c"), record("d"), record("d", "error")],
    )
    state = read_state(path)
    assert state.done_ids == {"a", "c", "d"}
    assert state.failed_ids == {"b"}
    assert (state.records, state.torn_bytes, state.corrupt_lines) == (6, 0, 0)


def test_torn_last_line_is_not_counted(tmp_path: Path) -> None:
    """A half line at the end is reported as torn bytes and its row is not done."""
    path = tmp_path / "out.jsonl"
    write_all(path, [record("1")])
    whole = json.dumps(record("2"), separators=(",", ":")).encode()
    with path.open("ab") as file:
        file.write(whole[:-1])
    state = read_state(path)
    assert state.done_ids == {"1"}
    assert state.torn_bytes == len(whole) - 1


def test_damaged_middle_line_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged line between good ones is skipped with a warning naming the line."""
    path = tmp_path / "out.jsonl"
    write_all(path, [record("1")])
    third = json.dumps(record("3"), separators=(",", ":")).encode()
    with path.open("ab") as file:
        file.write(b'{"id":"2","stat\x00\x00\n[1, 2]\n' + third + b"\n")
    with caplog.at_level(logging.WARNING, logger="batchrunner.results.resume"):
        state = read_state(path)
    assert state.done_ids == {"1", "3"}
    assert (state.records, state.corrupt_lines, state.torn_bytes) == (2, 2, 0)
    assert "skipped 2 damaged lines (at line 2, 3)" in caplog.text


def test_ids_that_need_escapes(tmp_path: Path) -> None:
    """Ids with quotes, backslashes, controls and non-ASCII read back exactly."""
    path = tmp_path / "out.jsonl"
    odd = ['say "hi"', "back\\slash", "tab\there", "東京", "\\u0041", "x\u2028y"]
    write_all(path, [record(row_id) for row_id in odd])
    assert read_state(path).done_ids == set(odd)


def test_records_written_in_another_key_order(tmp_path: Path) -> None:
    """Records that do not begin with id and status are parsed in full."""
    path = tmp_path / "out.jsonl"
    lines = [
        {"status": "ok", "id": "a"},
        {"id": 7, "status": "ok"},
        {"id": "b", "output": "x", "status": "error"},
        {"id": "c", "status": "ok", "input": {"n": 1}, "model": "m"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    state = read_state(path)
    assert state.done_ids == {"a", "7", "c"}
    assert state.failed_ids == {"b"}


def test_parquet_state_reads_the_journal(tmp_path: Path) -> None:
    """A Parquet output resumes from its journal, which has rows not yet rendered."""
    path = tmp_path / "out.parquet"
    write_all(path, [record("1")])
    journal = JsonlSink(journal_path(path))
    journal.write([record("2"), record("3", "error")])
    journal.close()
    state = read_state(path)
    assert state.done_ids == {"1", "2"}
    assert state.failed_ids == {"3"}
    assert list(read_results(path)["id"]) == ["1", "2", "3"]


def test_read_results_flattens_jsonl(tmp_path: Path) -> None:
    """JSONL records become flat columns, with unknown keys kept at the end."""
    path = tmp_path / "out.jsonl"
    write_all(path, [{**record("1"), "extra": True}, record("2", "error")])
    frame = read_results(path)
    assert list(frame.columns[-2:]) == ["input_k", "extra"]
    assert frame["usage_prompt_tokens"].tolist()[0] == 4
    assert frame["error_type"].tolist()[1] == "server_error"
    assert str(frame["latency_ms"].dtype) == "int64"


def three_records() -> list[dict[str, Any]]:
    """Three records whose text has the characters that make tearing interesting."""
    return [
        record("1", output='first, "quoted"\nsecond line'),
        record("2", "error"),
        record("3", output="ünïcødé\n\nend"),
    ]


def written(path: Path, records: list[dict[str, Any]]) -> tuple[bytes, int, list[int]]:
    """Write *records* one at a time: the file's bytes, its header's end, each end."""
    ends = []
    sink = open_sink(path)
    for one in records:
        sink.write([one])
        ends.append(data_file(path).stat().st_size)
    sink.close()
    data = data_file(path).read_bytes()
    header_end = data.index(b"\n") + 1 if path.suffix == ".csv" else 0
    return data, header_end, ends


@pytest.mark.parametrize("suffix", FORMATS)
def test_kill_at_every_byte(tmp_path: Path, suffix: str) -> None:
    """A file cut at any byte resumes with exactly its whole records, then appends."""
    data, header_end, ends = written(tmp_path / f"whole{suffix}", three_records())
    new = record("new", output="after a crash\n")
    solo, solo_header_end, _ = written(tmp_path / f"solo{suffix}", [new])
    # A JSONL record that lost only its newline is whole; a CSV one may not be.
    slack = 0 if suffix == ".csv" else 1
    for cut in range(len(data) + 1):
        path = tmp_path / str(cut) / f"out{suffix}"
        path.parent.mkdir()
        data_file(path).write_bytes(data[:cut])
        complete = sum(end - slack <= cut for end in ends)
        kept = max([header_end if cut >= header_end else 0, *ends[:complete]])
        state = read_state(path)
        assert (state.records, state.torn_bytes) == (complete, max(cut - kept, 0)), cut
        write_all(path, [new])
        appended = solo[solo_header_end:] if kept else solo
        assert data_file(path).read_bytes() == data[:kept] + appended, cut
        oks = {r["id"] for r in three_records()[:complete] if r["status"] == "ok"}
        assert read_state(path).done_ids == {*oks, "new"}, cut


@pytest.mark.parametrize("suffix", FORMATS)
def test_read_results_after_a_kill(tmp_path: Path, suffix: str) -> None:
    """After a torn write and a resumed run, read_results shows every row once."""
    data, _, ends = written(tmp_path / f"whole{suffix}", three_records())
    path = tmp_path / "cut" / f"out{suffix}"
    path.parent.mkdir()
    data_file(path).write_bytes(data[: ends[1] + 5])
    write_all(path, [record("3", output="ünïcødé\n\nend"), record("4")])
    frame = read_results(path)
    assert list(frame["id"]) == ["1", "2", "3", "4"]
    assert frame["output"].tolist()[2] == "ünïcødé\n\nend"
