"""Tests for batchrunner.rows.reader: reading rows lazily and validating whole files."""

from __future__ import annotations

import gzip
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from batchrunner.config.settings import InputSettings, Settings
from batchrunner.errors import ConfigError, InputError
from batchrunner.prepare.validate import InputReport, validate
from batchrunner.records import Api, Row
from batchrunner.rows.reader import open_rows, spool_stdin

COLUMNS = InputSettings()


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    """Write *content* to *name* in *tmp_path* (gzip when it ends in .gz)."""
    path = tmp_path / name
    data = content.encode() if isinstance(content, str) else content
    if name.endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return str(path)


def read(path: str, settings: InputSettings = COLUMNS) -> list[Row]:
    """Every row of *path*."""
    return list(open_rows(path, settings))


def lines_and_ids(rows: list[Row]) -> list[tuple[int, str]]:
    """The (line, id) of each row."""
    return [(r.line, r.id) for r in rows]


def settings(api: Api = Api.CHAT, **columns: Any) -> Settings:
    """Settings for *api* with the input *columns* settings."""
    return Settings(api=api, input=InputSettings(**columns))


def validation_error(path: str, the_settings: Settings | None = None) -> str:
    """The InputError message of validating *path*, shown by its name."""
    with pytest.raises(InputError) as caught:
        validate(path, the_settings or settings(), name=Path(path).name)
    return str(caught.value)


# --- reading ------------------------------------------------------------------


def test_jsonl_rows_carry_ids_fields_and_lines(tmp_path: Path):
    """JSONL rows keep their JSON values, and blank lines still count as lines."""
    path = write(
        tmp_path,
        "in.jsonl",
        '{"id": "a", "prompt": "Hi", "n": 1}\n\n  \n{"id": " b ", "prompt": "Yo"}\n',
    )
    rows = read(path)
    assert lines_and_ids(rows) == [(1, "a"), (4, "b")]
    assert rows[0].fields == {"id": "a", "prompt": "Hi", "n": 1}


def test_ndjson_and_leading_spaces_are_read(tmp_path: Path):
    """.ndjson is JSONL too, and an object may follow spaces."""
    path = write(tmp_path, "in.ndjson", '  {"prompt": "Hi"}\r\n')
    assert [r.fields for r in read(path)] == [{"prompt": "Hi"}]


def test_csv_rows_are_strings_with_their_lines(tmp_path: Path):
    """CSV values stay strings; blank lines are skipped but counted."""
    path = write(tmp_path, "in.csv", "id,prompt,n\na,Hi,1\n\nb,Yo,2\n")
    rows = read(path)
    assert lines_and_ids(rows) == [(2, "a"), (4, "b")]
    assert rows[1].fields == {"id": "b", "prompt": "Yo", "n": "2"}


def test_csv_quoted_newlines_keep_the_start_line(tmp_path: Path):
    """A record spanning lines reports the line it starts on, CRLF or not."""
    content = (
        'id,prompt\r\n1,"one\r\ntwo\r\nthree"\r\n2,plain\r\n'
        '3,"a ""quoted""\nword"\n4,x\n'
    )
    rows = read(write(tmp_path, "in.csv", content))
    assert lines_and_ids(rows) == [(2, "1"), (5, "2"), (6, "3"), (8, "4")]
    assert rows[0].fields["prompt"] == "one\r\ntwo\r\nthree"
    assert rows[2].fields["prompt"] == 'a "quoted"\nword'


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("in.csv.gz", "id,prompt\nx,Hi\n"),
        ("in.jsonl.gz", '{"id": "x", "prompt": "Hi"}\n'),
    ],
)
def test_gzip_files_are_read(tmp_path: Path, name: str, content: str):
    """Gzip-compressed CSV and JSONL read like the plain ones."""
    rows = read(write(tmp_path, name, content))
    assert [(r.id, r.fields["prompt"]) for r in rows] == [("x", "Hi")]


def test_corrupt_gzip_is_an_input_error(tmp_path: Path):
    """A .gz file that is not gzip says it cannot be read."""
    path = tmp_path / "in.jsonl.gz"
    path.write_bytes(b'{"prompt": "not compressed"}\n')
    with pytest.raises(InputError, match=r"in\.jsonl\.gz:1: cannot read the file"):
        read(str(path))


def test_utf8_bom_is_dropped(tmp_path: Path):
    """A UTF-8 BOM (Excel's "CSV UTF-8") does not end up in the first column name."""
    csv_path = write(tmp_path, "in.csv", "\ufeffid,prompt\nq1,Hi\n".encode())
    assert read(csv_path)[0].fields == {"id": "q1", "prompt": "Hi"}
    jsonl_path = write(tmp_path, "in.jsonl", '\ufeff{"id": "q1"}\n'.encode())
    assert read(jsonl_path)[0].id == "q1"


def test_ids_default_to_data_row_numbers(tmp_path: Path):
    """Without an id column, the id is the 1-based data-row number."""
    path = write(tmp_path, "in.csv", "prompt\nHi\n\nYo\n")
    assert lines_and_ids(read(path)) == [(2, "1"), (4, "2")]


def test_json_number_ids_become_text(tmp_path: Path):
    """Integral JSON numbers lose their .0; others keep their digits."""
    path = write(
        tmp_path, "in.jsonl", '{"id": 7}\n{"id": 8.0}\n{"id": 1.5}\n{"x": 1}\n'
    )
    assert [r.id for r in read(path)] == ["7", "8", "1.5", "4"]


def test_id_column_setting_names_the_id(tmp_path: Path):
    """input.id_column picks another column as the id."""
    path = write(tmp_path, "in.csv", "id,key,prompt\n1,k1,Hi\n")
    assert read(path, InputSettings(id_column="key"))[0].id == "k1"


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("in.csv", "id,prompt\n  ,Hi\n", 2),
        ("in.jsonl", '{"id": "", "prompt": "Hi"}\n', 1),
        ("in.jsonl", '{"prompt": "Hi"}\n{"id": null, "prompt": "Hi"}\n', 2),
    ],
)
def test_empty_id_is_an_input_error(tmp_path: Path, name: str, content: str, line: int):
    """A blank or null id is refused with its line."""
    with pytest.raises(InputError, match=rf"{name}:{line}: empty id"):
        read(write(tmp_path, name, content))


def test_unknown_suffix_names_the_supported_ones(tmp_path: Path):
    """A file whose suffix says nothing about its format is refused up front."""
    path = write(tmp_path, "in.txt", "prompt\nHi\n")
    with pytest.raises(InputError) as caught:
        open_rows(path, COLUMNS)
    assert str(caught.value).startswith(f"{path}: cannot tell the input format")
    assert ".csv, .csv.gz, .jsonl, .jsonl.gz" in str(caught.value)


def test_missing_file_fails_at_once(tmp_path: Path):
    """A missing file fails when opened, before any row is asked for."""
    with pytest.raises(InputError, match="no such file"):
        open_rows(str(tmp_path / "absent.csv"), COLUMNS)


def test_csv_row_with_too_many_fields_is_an_input_error(tmp_path: Path):
    """A row wider than the header says so, on its line."""
    path = write(tmp_path, "in.csv", "id,prompt\n1,Hi\n2,Hello, world\n")
    with pytest.raises(InputError, match=r"in\.csv:3: this row has 3 fields .* has 2"):
        read(path)


def test_csv_unclosed_quote_points_at_its_row(tmp_path: Path):
    """A quote that is never closed is reported where its row starts."""
    path = write(tmp_path, "in.csv", 'id,prompt\n1,Hi\n2,"oops\n3,more\n')
    with pytest.raises(
        InputError, match=r"in\.csv:3: the quoted field .* never closed"
    ):
        read(path)


def test_empty_csv_needs_a_header(tmp_path: Path):
    """An empty CSV file is refused: it has no header."""
    with pytest.raises(
        InputError, match="the file is empty; a CSV file starts with a header row"
    ):
        read(write(tmp_path, "in.csv", "\n"))


def test_undecodable_byte_gives_line_and_byte_column(tmp_path: Path):
    """A Latin-1 byte is reported at its line and 1-based byte column."""
    path = write(tmp_path, "in.csv", b"id,prompt\n1,caf\xe9\n")
    with pytest.raises(InputError) as caught:
        read(path)
    assert str(caught.value) == (
        f"{path}:2:6: byte 0xe9 is not UTF-8 text; save the file as UTF-8"
        " (in Excel: Save As → CSV UTF-8)"
    )


def test_bad_json_line_gives_line_and_column(tmp_path: Path):
    """A line that is not JSON is reported at json's line and column."""
    path = write(tmp_path, "in.jsonl", '{"prompt": "a"}\n{"prompt": }\n')
    with pytest.raises(InputError) as caught:
        read(path)
    assert str(caught.value).startswith(f"{path}:2:12: not valid JSON: Expecting value")


def test_json_line_that_is_not_an_object_is_an_input_error(tmp_path: Path):
    """Each JSONL line must be an object."""
    path = write(tmp_path, "in.jsonl", '["Hi"]\n')
    with pytest.raises(InputError, match=r"in\.jsonl:1:1: the line holds an array"):
        read(path)


def test_two_objects_on_one_line_are_refused(tmp_path: Path):
    """Extra data after the object is a JSON error at its column."""
    path = write(tmp_path, "in.jsonl", '{"a": 1} {"b": 2}\n')
    with pytest.raises(InputError, match=r"in\.jsonl:1:10: not valid JSON: Extra data"):
        read(path)


def test_stdin_is_spooled_to_a_jsonl_file(tmp_path: Path):
    """spool_stdin copies the stream to a file that reads as JSONL twice."""
    spooled = spool_stdin(io.BytesIO(b'{"prompt": "Hi"}\n{"prompt": "Yo"}\n'))
    try:
        assert spooled.suffix == ".jsonl"
        for _ in range(2):
            rows = list(open_rows(str(spooled), COLUMNS, name="<stdin>"))
            assert [r.fields["prompt"] for r in rows] == ["Hi", "Yo"]
    finally:
        spooled.unlink()


def test_errors_name_the_display_name(tmp_path: Path):
    """With a name (like <stdin> for a spooled stream), messages use it."""
    path = write(tmp_path, "spool.jsonl", "{oops}\n")
    with pytest.raises(InputError, match=r"^<stdin>:1:2: not valid JSON"):
        list(open_rows(path, COLUMNS, name="<stdin>"))


def test_dash_must_be_spooled_first():
    """Reading stdin directly would leave nothing for the send pass."""
    with pytest.raises(ValueError, match="spool"):
        open_rows("-", COLUMNS)


def test_rows_are_read_lazily(tmp_path: Path):
    """Taking 10 rows of 100k reads only the start: a later change to the end shows."""
    path = tmp_path / "big.jsonl"
    lines = [
        json.dumps({"id": f"r{i:06d}", "prompt": "x" * 20}) + "\n"
        for i in range(100_000)
    ]
    path.write_text("".join(lines))
    rows = open_rows(str(path), COLUMNS)
    assert [r.id for r in itertools.islice(rows, 10)] == [
        f"r{i:06d}" for i in range(10)
    ]
    # Rewrite the last line in place; a reader that had already read it
    # (or the whole file) would not see the change.
    with path.open("r+b") as handle:
        handle.seek(-len(lines[-1]), 2)
        handle.write(lines[-1].replace("r099999", "zlast00").encode())
    rest = list(rows)
    assert len(rest) == 100_000 - 10
    assert rest[-1].id == "zlast00"


# --- validation ---------------------------------------------------------------


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
