"""The pure parts of batch mode: lines, file splitting, names, answers, rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types import Batch, FileObject

from batchrunner.config.layers import build_settings
from batchrunner.errors import EXIT_TEMPFAIL, ConfigError
from batchrunner.records import Api, Request
from batchrunner.send.batch.answers import result_from_line
from batchrunner.send.batch.lifecycle import (
    deployment_refusal,
    is_running,
    spent_files,
    token_limit_waits,
    unused_files,
    validation_faults,
    why_stopped,
)
from batchrunner.send.batch.lines import (
    batch_url,
    custom_id,
    custom_ids,
    input_line,
    write_parts,
)
from batchrunner.send.batch.names import (
    PartName,
    is_ours,
    output_key,
    parse_file_name,
)
from batchrunner.send.batch.run import check_batch_options
from batchrunner.send.batch.state import BatchState, load_state, save_state


def request(row_id: str, text: str = "hi", api: Api = Api.CHAT) -> Request:
    """A prepared request like the builder makes."""
    body = (
        {"messages": [{"role": "user", "content": text}], "max_tokens": 5}
        if api is Api.CHAT
        else {"prompt": text}
    )
    return Request(row_id, api, body, prompt_tokens=1, charged_tokens=6)


def batch(**fields: object) -> Batch:
    """A batch object as the SDK parses one."""
    data: dict[str, object] = {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": "completed",
        "created_at": 1,
    }
    data.update(fields)
    return Batch.model_validate(data)


def test_input_line_carries_row_id_url_and_deployment_as_model() -> None:
    """A line is custom_id = row id, POST, the operation's url, the body + model."""
    line = input_line(request("r1", "héllo"), "my-batch-dep")
    assert line.endswith(b"\n") and not line.startswith(b"\xef\xbb\xbf")
    data = json.loads(line)
    assert data["custom_id"] == "r1"
    assert data["method"] == "POST"
    assert data["url"] == "/chat/completions"
    assert data["body"]["model"] == "my-batch-dep"
    assert data["body"]["messages"][0]["content"] == "héllo"
    assert "héllo".encode() in line  # UTF-8, not \\u escapes


def test_completions_url_and_embeddings_refused() -> None:
    """Completions go to /completions; embeddings are refused as Azure does."""
    assert json.loads(input_line(request("a", api=Api.COMPLETIONS), "d"))["url"] == (
        "/completions"
    )
    with pytest.raises(ConfigError, match="does not support embeddings"):
        batch_url(Api.EMBEDDINGS)


def test_lone_surrogate_still_makes_valid_json() -> None:
    """A broken escape in the input becomes a JSON escape, not a crash."""
    line = input_line(request("s", "bad \ud800 text"), "d")
    assert json.loads(line)["body"]["messages"][0]["content"] == "bad \ud800 text"


def test_files_split_at_the_request_limit(tmp_path: Path) -> None:
    """Seven requests at three a file make files of 3, 3 and 1, in order."""
    parts = write_parts(
        (request(f"r{i}") for i in range(7)), "d", tmp_path,
        max_requests=3, max_bytes=10**9,
    )  # fmt: skip
    assert [p.requests for p in parts] == [3, 3, 1]
    ids = [list(custom_ids(p.path.open("rb"))) for p in parts]
    assert ids == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert all(p.bytes == p.path.stat().st_size for p in parts)


def test_files_split_at_the_byte_limit(tmp_path: Path) -> None:
    """No file passes the byte limit; a line bigger than it is refused."""
    size = len(input_line(request("r0"), "d"))
    parts = write_parts(
        (request(f"r{i}") for i in range(5)), "d", tmp_path,
        max_requests=100, max_bytes=size * 2 + 1,
    )  # fmt: skip
    assert [p.requests for p in parts] == [2, 2, 1]
    assert all(p.bytes <= size * 2 + 1 for p in parts)
    with pytest.raises(ConfigError, match=r"batch_max_bytes.*--mode online"):
        write_parts([request("big", "x" * 500)], "d", tmp_path, max_requests=9,
                    max_bytes=100)  # fmt: skip


def test_no_requests_no_files(tmp_path: Path) -> None:
    """Nothing to send writes no file (an empty batch would fail)."""
    parts = write_parts([], "d", tmp_path, max_requests=3, max_bytes=100)
    assert parts == []


def test_custom_id_of_lines_written_otherwise() -> None:
    """Lines that do not start with custom_id are parsed whole; blanks are None."""
    assert custom_id(b'{"id":"x","custom_id":"r\\"9"}\n') == 'r"9'
    assert custom_id(b'{"custom_id":"r\\u00e9"}') == "ré"
    assert custom_id(b"\n") is None


def test_output_key_is_stable_and_names_shard(tmp_path: Path) -> None:
    """The same output gives the same key from any directory; shards differ."""
    path = tmp_path / "out.results.jsonl"
    assert output_key(str(path)) == output_key(str(path))
    assert output_key(str(path), (0, 2)) != output_key(str(path), (1, 2))
    assert output_key("az://c/x.jsonl") != output_key("az://c/y.jsonl")


def test_file_names_and_metadata_name_the_output() -> None:
    """A part's file name parses back; its metadata names the output."""
    name = PartName("0123456789abcdef", "a1b2c3d4", 3)
    assert parse_file_name(name.file_name) == name
    assert parse_file_name("someone-else.jsonl") is None
    metadata = name.metadata("results/out.jsonl", "gpt-4o-mini-batch")
    assert is_ours(metadata, "0123456789abcdef")
    assert not is_ours(metadata, "fedcba9876543210")
    assert not is_ours(None, "0123456789abcdef")
    assert all(len(v) <= 512 for v in name.metadata("x" * 600, "d" * 600).values())
    assert metadata["batchrunner_deployment"] == "gpt-4o-mini-batch"


def test_ok_line_becomes_the_online_record() -> None:
    """A 200 line gives output, finish_reason, usage, model and request id."""
    line = json.dumps({
        "custom_id": "r1",
        "response": {"status_code": 200, "request_id": "req-1", "body": {
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }},
        "error": None,
    }).encode()  # fmt: skip
    result = result_from_line(line, Api.CHAT)
    assert result is not None and result.status == "ok" and result.reply is not None
    assert result.reply.output == "Hello"
    assert result.reply.finish_reason == "stop"
    assert result.reply.usage.total_tokens == 4
    assert result.reply.model == "gpt-4o-mini-2024-07-18"
    assert result.request_id == "req-1"
    assert result.attempts == 1


def test_error_lines_become_error_records() -> None:
    """An HTTP error line and a non-HTTP error line both give the error's fields."""
    http = json.dumps({
        "custom_id": "r5",
        "response": {"status_code": 400, "request_id": "q", "body": {"error": {
            "message": "too long", "type": "invalid_request_error",
            "code": "context_length_exceeded"}}},
        "error": None,
    }).encode()  # fmt: skip
    result = result_from_line(http, Api.CHAT)
    assert result is not None and result.status == "error" and result.error
    assert result.error.as_dict() == {
        "type": "invalid_request_error", "status_code": 400,
        "code": "context_length_exceeded", "message": "too long",
    }  # fmt: skip
    bare = b'{"custom_id":"r6","response":null,"error":{"code":"x","message":"gone"}}'
    other = result_from_line(bare, Api.CHAT)
    assert other is not None and other.error is not None
    assert (other.error.code, other.error.message) == ("x", "gone")
    assert result_from_line(b"  \n", Api.CHAT) is None


def test_running_and_ended_statuses() -> None:
    """cancelling counts as running; completed, failed, expired, cancelled ended."""
    for status in ("validating", "in_progress", "finalizing", "cancelling"):
        assert is_running(batch(status=status))
    for status in ("completed", "failed", "expired", "cancelled"):
        assert not is_running(batch(status=status))


def test_files_no_batch_uses_are_unused() -> None:
    """An uploaded file is unused when no batch names it as its input."""
    files = [
        FileObject(id=i, object="file", bytes=1, created_at=1, filename=f"{i}.jsonl",
                   purpose="batch", status="processed")
        for i in ("file-a", "file-b")
    ]  # fmt: skip
    assert unused_files(files, [batch(input_file_id="file-a")]) == ["file-b"]


def test_files_of_collected_ended_batches_are_spent() -> None:
    """An input file is spent once its batch has ended and been collected."""
    files = [
        FileObject(id=i, object="file", bytes=1, created_at=1, filename=f"{i}.jsonl",
                   purpose="batch", status="processed")
        for i in ("file-a", "file-b", "file-c")
    ]  # fmt: skip
    batches = [
        batch(id="batch_a", input_file_id="file-a"),
        batch(id="batch_b", input_file_id="file-b"),
        batch(id="batch_c", input_file_id="file-c", status="in_progress"),
    ]
    assert spent_files(files, batches, {"batch_a", "batch_c"}) == ["file-a"]


def test_validation_failures_map_lines_and_name_the_deployment() -> None:
    """Line errors are kept with their line; invalid_request says how to fix it."""
    failed = batch(status="failed", errors={"object": "list", "data": [
        {"code": "duplicate_custom_id", "message": "dup", "line": 3},
        {"code": "invalid_request", "message": "not a batch deployment", "line": None},
    ]})  # fmt: skip
    faults = validation_faults(failed)
    assert [(f.line, f.code) for f in faults] == [(3, "duplicate_custom_id")]
    refusal = deployment_refusal(failed, "gpt-4o-mini")
    assert (
        refusal is not None and "Global-Batch" in refusal and "--deployment" in refusal
    )
    assert deployment_refusal(batch(status="completed"), "d") is None
    sent_to = {"batchrunner_deployment": "gpt-4o-mini"}
    old = batch(status="failed", errors=failed.errors, metadata=sent_to)
    assert deployment_refusal(old, "gpt-4o-mini") == refusal
    assert deployment_refusal(old, "gpt-4o-mini-batch") is None


def test_token_limit_waits_double_and_fit_the_deadline() -> None:
    """5, 10, 20 … s; tries are capped, or waits fit into the time left."""
    assert token_limit_waits(4, None) == [5.0, 10.0, 20.0]
    assert token_limit_waits(99, 40.0) == [5.0, 10.0, 20.0]
    assert token_limit_waits(99, 4.0) == []


def test_running_batches_or_held_back_rows_are_resumable() -> None:
    """Running batches or rows held back end the run resumably (75); else not."""
    running = why_stopped(2, None)
    assert running is not None and running.exit_code == EXIT_TEMPFAIL
    assert "2 batches are still running" in str(running)
    held = why_stopped(0, "the quota is full")
    assert held is not None and str(held) == "the quota is full"
    assert why_stopped(0, None) is None


def test_state_round_trips_and_damage_is_explained(tmp_path: Path) -> None:
    """The state file is read back as written; a damaged one is a clear error."""
    path = tmp_path / "out.batches.json"
    assert load_state(path) == BatchState()
    save_state(path, BatchState({"b1", "b2"}, {"b3"}))
    assert load_state(path) == BatchState({"b1", "b2"}, {"b3"})
    assert [p.name for p in tmp_path.iterdir()] == ["out.batches.json"]
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="move it away"):
        load_state(path)


def test_batch_settings_and_prices(tmp_path: Path) -> None:
    """mode, limits and batch prices are settings; batch is half price by default."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "mode: batch\nbatch_max_requests: 10\nprices:\n"
        "  my-model: {input: 2, output: 4}\n"
        "  other: {input: 2, output: 4, batch_input: 1.5, batch_output: 3}\n"
    )
    settings = build_settings({"poll_interval": 5}, {"BATCHRUNNER_WAIT": "yes"}, config)
    assert (settings.mode, settings.wait, settings.poll_interval) == ("batch", True, 5)
    assert settings.batch_max_requests == 10
    assert settings.batch_max_bytes == 200_000_000
    assert settings.price_for("my-model") == (1.0, 2.0)
    assert settings.price_for("my-model", batch=False) == (2.0, 4.0)
    assert settings.price_for("other") == (1.5, 3.0)
    assert settings.price_for("gpt-4o-mini") == (0.075, 0.3)
    online = build_settings({}, {}, None)
    assert online.mode == "online" and online.price_for("gpt-4o-mini") == (0.15, 0.6)


@pytest.mark.parametrize(
    ("name", "value"),
    [("batch_max_requests", "100001"), ("batch_max_bytes", "300000000")],
)
def test_file_limits_over_the_services_are_refused(name: str, value: str) -> None:
    """Input files the service would refuse every time are a settings error."""
    env = {"BATCHRUNNER_MODE": "batch", f"BATCHRUNNER_{name.upper()}": value}
    settings = build_settings({}, env, None)
    with pytest.raises(ConfigError, match=rf"{name} is .*over the Batch API's limit"):
        check_batch_options(settings)
    at_limit = build_settings({}, {"BATCHRUNNER_MODE": "batch"}, None)
    check_batch_options(at_limit)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_error_request_ids_are_read_from_every_format(
    tmp_path: Path, suffix: str
) -> None:
    """The request ids of error records are found in JSONL, CSV and Parquet."""
    from batchrunner.results.resume import error_request_ids
    from batchrunner.results.sinks import open_sink

    path = tmp_path / f"out{suffix}"
    error = {"type": "t", "status_code": 400, "code": "c", "message": "m"}
    sink = open_sink(path)
    sink.write([
        {"id": "a", "status": "error", "attempts": 1, "request_id": "q1",
         "error": error},
        {"id": "b", "status": "ok", "output": "x", "attempts": 1,
         "request_id": "q2"},
        {"id": "c", "status": "error", "attempts": 1, "request_id": None,
         "error": error},
    ])  # fmt: skip
    sink.close()
    assert error_request_ids(path) == {"q1"}
    assert error_request_ids(tmp_path / f"none{suffix}") == set()
