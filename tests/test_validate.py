"""Tests for batchrunner.prepare.validate: whole files checked before sending."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchrunner.config.sections import InputSettings
from batchrunner.config.settings import Settings
from batchrunner.errors import ConfigError, InputError
from batchrunner.prepare.validate import InputReport, validate
from batchrunner.records import Api
from tests.test_reader import write


def settings(api: Api = Api.CHAT, **columns: Any) -> Settings:
    """Settings for *api* with the input *columns* settings."""
    return Settings(api=api, input=InputSettings(**columns))


def validation_error(path: str, the_settings: Settings | None = None) -> str:
    """The InputError message of validating *path*, shown by its name."""
    with pytest.raises(InputError) as caught:
        validate(path, the_settings or settings(), name=Path(path).name)
    return str(caught.value)


def test_validate_reports_rows_and_csv_header(tmp_path: Path):
    """A good CSV validates to its row count and header."""
    path = write(tmp_path, "in.csv", "id,prompt,topic\n1,Hi,a\n2,Yo,b\n")
    assert validate(path, settings()) == InputReport(
        rows=2, columns=["id", "prompt", "topic"]
    )


def test_validate_lists_jsonl_keys_in_order_seen(tmp_path: Path):
    """JSONL columns are the union of the keys, in the order first seen."""
    content = (
        '{"id": 1, "prompt": "Hi"}\n'
        '{"id": 2, "messages": "[{\\"role\\": \\"user\\", \\"content\\": \\"x\\"}]"}\n'
        '{"id": 3, "messages": [{"role": "user", "content": "y"}], "tag": 1}\n'
    )
    report = validate(write(tmp_path, "in.jsonl", content), settings())
    assert report == InputReport(rows=3, columns=["id", "prompt", "messages", "tag"])


def test_validate_reports_undecodable_bytes(tmp_path: Path):
    """Validation passes on the reader's errors unchanged."""
    path = write(tmp_path, "in.jsonl", b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    assert validation_error(path).startswith("in.jsonl:2:13: byte 0xff is not UTF-8")


def test_validate_reports_a_bad_json_line(tmp_path: Path):
    """A broken JSONL line stops validation at its line and column."""
    path = write(tmp_path, "in.jsonl", '{"prompt": "a"}\n{"prompt": "b",}\n')
    message = validation_error(path)
    assert message.startswith("in.jsonl:2:16: not valid JSON: Expecting property name")


def test_validate_points_at_bad_messages_json_in_a_csv_cell(tmp_path: Path):
    """Bad JSON in a CSV messages cell is reported at the cell's line and column."""
    content = (
        "id,messages,topic\n"
        '1,"[{""role"": ""user"", ""content"": ""hi""}]","two\nlines"\n'
        '2,"[{""role"": }]",b\n'
    )
    message = validation_error(write(tmp_path, "in.csv", content))
    assert message.startswith(
        "in.csv:4:3: the 'messages' cell is not valid JSON: Expecting value:"
        " line 1 column 11 (char 10)"
    )


def test_validate_finds_a_cell_that_starts_on_a_later_line(tmp_path: Path):
    """After a multi-line field, the next cell's own line and column are given."""
    content = 'id,note,messages\n1,"a\nbc","[oops"\n'
    message = validation_error(write(tmp_path, "in.csv", content))
    assert message.startswith("in.csv:3:5: the 'messages' cell is not valid JSON")


def test_validate_says_which_message_is_wrong(tmp_path: Path):
    """A message with a bad role is named, at the messages value's column."""
    line = '{"id": 1, "messages": [{"role": "user", "content": "a"}, {"role": "bot"}]}'
    message = validation_error(write(tmp_path, "in.jsonl", line + "\n"))
    column = line.index("[") + 1
    assert message == (
        f"in.jsonl:1:{column}: 'messages': message 2 of 2 has role 'bot'; a role is"
        " one of system, user, assistant, tool, developer"
    )


def test_validate_needs_a_source_column_in_the_csv_header(tmp_path: Path):
    """A header without messages or prompt, and no template, fails on line 1."""
    message = validation_error(write(tmp_path, "in.csv", "id,text\n1,Hi\n"))
    assert message.startswith(
        "in.csv:1: the header 'id', 'text' has no 'messages' or 'prompt' column"
    )
    assert "input.prompt_column (or input.messages_column)" in message
    assert "input.template" in message


def test_validate_completions_with_only_messages_says_use_prompt(tmp_path: Path):
    """For completions, a messages column is no source: the message says use prompt."""
    path = write(tmp_path, "in.csv", 'id,messages\n1,"[]"\n')
    message = validation_error(path, settings(Api.COMPLETIONS))
    assert message.startswith("in.csv:1: the header 'id', 'messages' has no 'prompt'")
    assert "only works with --api chat, so use a 'prompt' column" in message


def test_validate_checks_template_placeholders_against_the_csv_header(tmp_path: Path):
    """A template placeholder with no column fails on line 1, listing the columns."""
    path = write(tmp_path, "in.csv", "id,text\n1,Hi\n")
    message = validation_error(path, settings(template="Summarise: {body}"))
    assert message == (
        "in.csv:1: input.template uses {body}, but the header has no 'body' column;"
        " the columns are 'id', 'text'"
    )


def test_validate_checks_template_placeholders_per_jsonl_row(tmp_path: Path):
    """In JSONL, the first row that lacks a placeholder's key is named."""
    path = write(tmp_path, "in.jsonl", '{"body": "x"}\n{"text": "y"}\n')
    message = validation_error(path, settings(template="Summarise: {body}"))
    assert message == (
        "in.jsonl:2: input.template uses {body}, but this row has no 'body' column;"
        " its columns are 'text'"
    )


def test_validate_refuses_an_invalid_template(tmp_path: Path):
    """A template that is not format syntax is a settings error, not an input one."""
    path = write(tmp_path, "in.jsonl", '{"text": "y"}\n')
    with pytest.raises(ConfigError, match="not a valid template"):
        validate(path, settings(template="Summarise: {text"))


def test_validate_names_both_lines_of_a_duplicate_id(tmp_path: Path):
    """A repeated id names its line and the first one, at the id cell."""
    path = write(tmp_path, "in.csv", "prompt,id\nx,a\ny,b\n\nz,a\n")
    assert validation_error(path) == (
        "in.csv:5:3: id 'a' on line 5 duplicates line 2; ids must be unique"
    )


def test_validate_finds_duplicate_jsonl_ids_across_number_types(tmp_path: Path):
    """The ids 3 and "3" are the same id."""
    line = '{"prompt": "y", "id": "3"}'
    path = write(tmp_path, "in.jsonl", '{"prompt": "x", "id": 3}\n' + line + "\n")
    column = line.index('"3"') + 1
    assert validation_error(path) == (
        f"in.jsonl:2:{column}: id '3' on line 2 duplicates line 1; ids must be unique"
    )


def test_validate_points_at_an_empty_id(tmp_path: Path):
    """An empty id cell is reported at its column."""
    path = write(tmp_path, "in.csv", 'prompt,id\nx,a\n"y,z",\n')
    assert validation_error(path).startswith("in.csv:3:7: empty id")


def test_validate_points_at_an_empty_prompt(tmp_path: Path):
    """A row whose prompt cell is empty is reported at that cell."""
    path = write(tmp_path, "in.csv", "id,prompt,topic\n1,Hi,a\n2,,b\n")
    assert validation_error(path).startswith(
        "in.csv:3:3: empty prompt: the 'prompt' cell is empty"
    )


def test_validate_names_the_real_path_by_default(tmp_path: Path):
    """Without a display name, messages name the file's path."""
    path = write(tmp_path, "in.csv", "id,prompt\n1,\n")
    with pytest.raises(InputError, match=f"^{path}:2:3: empty prompt"):
        validate(path, settings())


def test_validate_accepts_what_prepare_accepts(tmp_path: Path):
    """System, template and renamed columns together validate cleanly."""
    path = write(tmp_path, "in.csv.gz", "key,system,text\nk1,Be brief,Hello\nk2,,Bye\n")
    the_settings = settings(id_column="key", template="Reply to: {text}")
    assert validate(path, the_settings) == InputReport(
        rows=2, columns=["key", "system", "text"]
    )
