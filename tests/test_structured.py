"""
Structured answers: a JSON schema sent as response_format, answers checked against it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from batchrunner.cli import run
from batchrunner.results.frame import read_results
from batchrunner.simulator import SimulatorServer
from batchrunner.simulator.schemagen import structured_text
from tests.test_cli import read_jsonl, write_jsonl

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["label", "score", "reasons"],
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reasons": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
}
ROWS = [
    {"id": "good", "prompt": "Rate: lovely"},
    {"id": "cut", "prompt": "Rate: BADJSON"},
    {"id": "off", "prompt": "Rate: BADSCHEMA"},
]


def _schema_file(tmp_path: Path, schema: Any = SCHEMA) -> str:
    path = tmp_path / "review.json"
    path.write_text(json.dumps(schema))
    return str(path)


def test_answers_match_or_become_schema_errors(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A valid answer is an object under 'answer'; invalid ones are SchemaErrors."""
    source = write_jsonl(tmp_path / "s.jsonl", ROWS)
    assert run([str(source), "--schema", _schema_file(tmp_path)]) == 1
    records = {r["id"]: r for r in read_jsonl(tmp_path / "s.results.jsonl")}
    good = records["good"]
    assert good["status"] == "ok"
    jsonschema.validate(good["answer"], SCHEMA)
    assert json.loads(good["output"]) == good["answer"]
    cut, off = records["cut"], records["off"]
    assert cut["status"] == off["status"] == "error"
    assert cut["error"]["type"] == off["error"]["type"] == "SchemaError"
    assert cut["error"]["code"] == "invalid_json"
    assert off["error"]["code"] == "schema_mismatch"
    assert "'label' is a required property" in off["error"]["message"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut["output"])  # the raw text is kept as it came
    assert "answer" not in cut
    assert cut["usage"]["completion_tokens"] > 0  # paid for, so still counted
    (sent, *_) = azure_env.ledger.bodies()
    response_format = sent["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"] == {
        "name": "review",
        "schema": SCHEMA,
        "strict": True,
    }
    summary = json.loads((tmp_path / "s.results.summary.json").read_text())
    kinds = {e["kind"] for e in summary["errors"]}
    assert kinds == {"SchemaError invalid_json", "SchemaError schema_mismatch"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_answer_fields_become_typed_columns(
    azure_env: SimulatorServer, tmp_path: Path, suffix: str
) -> None:
    """CSV and Parquet hold answer_<field> columns, read back with their types."""
    source = write_jsonl(tmp_path / "s.jsonl", ROWS)
    output = tmp_path / f"out{suffix}"
    assert (
        run([str(source), "--schema", _schema_file(tmp_path), "-o", str(output)]) == 1
    )
    frame = read_results(output).set_index("id")
    columns = list(frame.columns)
    assert columns.index("answer_label") < columns.index("answer_reasons")
    assert str(frame["answer_score"].dtype) == "Int64"  # error rows have none
    assert frame.loc["good", "answer_score"] in {1, 2, 3, 4, 5}
    assert frame.loc["good", "answer_label"] in {"positive", "negative", "neutral"}
    assert isinstance(frame.loc["good", "answer_reasons"], list)
    assert frame.loc["off", "error_type"] == "SchemaError"


def test_json_object_mode_parses_answers(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """response_format json_object in the settings: any JSON object is an answer."""
    (tmp_path / "config.yaml").write_text(
        "request:\n  response_format: {type: json_object}\n"
    )
    source = write_jsonl(tmp_path / "o.jsonl", [{"prompt": "Reply in JSON"}])
    assert run([str(source)]) == 0
    (record,) = read_jsonl(tmp_path / "o.results.jsonl")
    assert isinstance(record["answer"], dict)


BAD_SCHEMAS: list[tuple[str, str, str]] = [
    ("not-json", '{"type": "object",\n  "properties": }', "review.json:2:17"),
    ("bad keyword", '{"type": "objekt"}', "not a valid JSON schema at $.type"),
    ("array root", '{"type": "array", "items": {}}', "root must be"),
    (
        "not strict",
        '{"type": "object", "properties": {"a": {"type": "string"}}}',
        '"additionalProperties": false (at $)',
    ),
    (
        "not all required",
        '{"type": "object", "additionalProperties": false, "required": [],'
        ' "properties": {"a": {"type": "string"}}}',
        'listed in "required" (at $)',
    ),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_SCHEMAS)
def test_bad_schema_exits_2_before_sending(
    azure_env: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    text: str,
    message: str,
) -> None:
    """A schema that cannot work is refused with exit 2 and nothing sent."""
    (tmp_path / "review.json").write_text(text)
    source = write_jsonl(tmp_path / "s.jsonl", ROWS)
    schema = str(tmp_path / "review.json")
    assert run([str(source), "--schema", schema, "--log-format", "text"]) == 2
    _, err = capsys.readouterr()
    assert message in err
    assert "Traceback" not in err
    assert azure_env.ledger.count() == 0


def test_schema_needs_chat(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Structured answers with --api completions are a usage error."""
    source = write_jsonl(tmp_path / "s.jsonl", ROWS)
    schema = _schema_file(tmp_path)
    assert run([str(source), "--schema", schema, "--api", "completions"]) == 2
    assert "need --api chat" in capsys.readouterr().err


GENERATED: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 30, "maxLength": 40},
        "when": {"type": ["string", "null"], "format": "date"},
        "count": {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 6},
        "ratio": {"type": "number", "minimum": 0.5, "maximum": 0.6},
        "flag": {"type": "boolean"},
        "kind": {"const": "fixed"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 2},
        "either": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        "both": {
            "allOf": [{"type": "object"}, {"properties": {"x": {"type": "null"}}}]
        },
    },
    "required": ["name", "count", "ratio", "flag", "kind", "tags", "either", "both"],
    "$defs": {"tag": {"type": "string", "enum": ["a", "b", "c"]}},
}


def test_simulator_answers_match_their_schema() -> None:
    """The simulator's JSON is valid for many schema features, and deterministic."""
    response_format = {"type": "json_schema", "json_schema": {"schema": GENERATED}}
    prompts = [f"prompt {random.Random(i).random()}" for i in range(25)]
    for prompt in prompts:
        value = json.loads(structured_text(response_format, prompt, 0))
        jsonschema.validate(value, GENERATED)
    again = structured_text(response_format, prompts[0], 0)
    assert again == structured_text(response_format, prompts[0], 0)
