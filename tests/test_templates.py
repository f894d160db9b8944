"""
Jinja2 prompt templates: few-shot examples and loops, checked before sending.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.test_cli import write_csv, write_jsonl

FEW_SHOT = """\
{% set examples = [
  {"text": "Loved every minute.", "label": "positive"},
  {"text": "A waste of money.", "label": "negative"},
] %}
Classify the sentiment of a {{ product }} review.
{% for ex in examples + extra %}
Review: {{ ex.text }}
Label: {{ ex.label }}
{% endfor %}
Review: {{ row["review text"] }}
Label:"""

#: What FEW_SHOT makes of the row below, written out by hand.
EXPECTED = """\
Classify the sentiment of a kettle review.
Review: Loved every minute.
Label: positive
Review: A waste of money.
Label: negative
Review: Fine, I guess.
Label: neutral
Review: Boils fast, but loud.
Label:"""


def _user_messages(simulator: SimulatorServer) -> list[str]:
    return [body["messages"][-1]["content"] for body in simulator.ledger.bodies()]


def test_few_shot_template_with_loops(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """Examples from the template and from the row are looped into the prompt."""
    (tmp_path / "eval.j2").write_text(FEW_SHOT)
    row = {
        "id": "k1",
        "product": "kettle",
        "review text": "Boils fast, but loud.",
        "extra": [{"text": "Fine, I guess.", "label": "neutral"}],
    }
    source = write_jsonl(tmp_path / "in.jsonl", [row])
    assert run([str(source), "--template", "eval.j2"]) == 0
    assert _user_messages(azure_env) == [EXPECTED]


def test_template_file_setting_builds_prompts_from_the_prompt_column(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """input.template_file wraps every row, the prompt column included."""
    (tmp_path / "wrap.j2").write_text("Answer briefly: {{ prompt | upper }}")
    (tmp_path / "config.yaml").write_text("input:\n  template_file: wrap.j2\n")
    source = write_csv(tmp_path / "in.csv", [{"id": "1", "prompt": "why?"}])
    assert run([str(source)]) == 0
    assert _user_messages(azure_env) == ["Answer briefly: WHY?"]


BAD_TEMPLATES: list[tuple[str, str, str, str]] = [
    (
        "in.csv",
        "Summarise:\n{{ text }}\n{{ body }}",
        "eval.j2:3: the template uses 'body', but the header of in.csv:1 has no",
        "csv header",
    ),
    (
        "in.jsonl",
        "Summarise:\n{{ text }} {{ body }}",
        "in.jsonl:2: the template eval.j2:2 uses 'body', but this row has no",
        "jsonl row",
    ),
    ("in.csv", "Hi {% for x in %}", "eval.j2:1: template syntax error", "syntax"),
    (
        "in.csv",
        "{{ text.missing }}",
        "in.csv:2: the template eval.j2:1 failed on this row:",
        "render",
    ),
]


@pytest.mark.parametrize(("name", "template", "message", "case"), BAD_TEMPLATES)
def test_bad_templates_exit_2_naming_the_place(
    azure_env: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    template: str,
    message: str,
    case: str,
) -> None:
    """Undefined variables and syntax errors stop the run before anything is sent."""
    (tmp_path / "eval.j2").write_text(template)
    rows = [{"id": "1", "text": "x", "body": "y"}, {"id": "2", "text": "x"}]
    if name.endswith(".csv"):
        write_csv(tmp_path / name, [{"id": "1", "text": "x"}])
    else:
        write_jsonl(tmp_path / name, rows)
    assert run([name, "--template", "eval.j2", "--log-format", "text"]) == 2
    _, err = capsys.readouterr()
    assert message in err
    assert "Traceback" not in err
    assert azure_env.ledger.count() == 0


def test_template_and_template_file_clash(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both kinds of template at once is a settings error; a missing file too."""
    (tmp_path / "config.yaml").write_text("input:\n  template: 'Hi {text}'\n")
    (tmp_path / "t.j2").write_text("{{ text }}")
    write_csv(tmp_path / "in.csv", [{"id": "1", "text": "x"}])
    assert run(["in.csv", "--template", "t.j2", "--log-format", "text"]) == 2
    assert "not both" in capsys.readouterr().err
    (tmp_path / "config.yaml").unlink()
    assert run(["in.csv", "--template", "nope.j2", "--log-format", "text"]) == 2
    assert "template file 'nope.j2' (flag) does not exist" in capsys.readouterr().err
