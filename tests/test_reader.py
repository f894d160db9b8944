"""Tests for batchrunner.rows.reader: reading rows lazily, each with its line."""

from __future__ import annotations

import gzip
import io
import itertools
import json
from pathlib import Path

import pytest

from batchrunner.config.sections import InputSettings
from batchrunner.errors import InputError
from batchrunner.records import Row
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
