"""
--show-config: every setting with its source, and never a secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.conftest import SECRET_KEY

#: Looks like an Azure key (32 hex digits) though it sits in an ordinary setting.
KEY_LOOKING = "9f86d081884c7d659a2feaa0c55ad015"
HIDDEN_VALUE = "hunter2-not-for-eyes"


def _table(out: str) -> dict[str, tuple[str, str]]:
    """setting → (source, value), from the printed table."""
    header, *lines = out.splitlines()
    value_at = header.index("value")
    source_at = header.index("source")
    return {
        line.split()[0]: (line[source_at:value_at].strip(), line[value_at:].strip())
        for line in lines
    }


def test_show_config_names_sources_and_hides_secrets(
    azure_env: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Flag, environment, file and default are named; secrets and key-likes are ***."""
    monkeypatch.setenv("BATCHRUNNER_CONCURRENCY", "7")
    (tmp_path / "config.yaml").write_text(
        "timeout: 30\n"
        "request:\n"
        "  temperature: 0.2\n"
        f"  user: {KEY_LOOKING}\n"
        f"  client_secret: {HIDDEN_VALUE}\n"
        "input:\n"
        "  system: Be brief.\n"
    )
    code = run(["in.csv", "--show-config", "--deployment", "dep-x", "--tpm", "5000"])
    assert code == 0
    out, err = capsys.readouterr()
    table = _table(out)
    assert table["deployment"] == ("flag --deployment", "dep-x")
    assert table["tpm"] == ("flag --tpm", "5000")
    assert table["concurrency"] == ("environment BATCHRUNNER_CONCURRENCY", "7")
    assert table["api_key"] == ("environment AZURE_OPENAI_API_KEY", "***")
    assert table["endpoint"] == ("environment AZURE_OPENAI_ENDPOINT", azure_env.url)
    config = str(tmp_path / "config.yaml")
    assert table["timeout"] == (f"file {config}", "30.0")
    assert table["request.temperature"] == (f"file {config}", "0.2")
    assert table["input.system"] == (f"file {config}", "Be brief.")
    assert table["max_attempts"] == ("default", "6")
    assert table["output"] == ("default: beside the input", "in.results.jsonl")
    for name in (
        "temperature", "top_p", "frequency_penalty", "presence_penalty", "n",
        "logit_bias", "max_tokens",
    ):  # fmt: skip
        assert f"request.{name}" in table
    assert table["request.user"][1] == "***"
    assert table["request.client_secret"][1] == "***"
    for text in (out, err):
        assert SECRET_KEY not in text
        assert KEY_LOOKING not in text
        assert HIDDEN_VALUE not in text
    assert azure_env.ledger.count() == 0


def test_show_config_masks_credentials_in_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key in an endpoint's query string or user info is not printed."""
    monkeypatch.setenv(
        "AZURE_OPENAI_ENDPOINT",
        f"https://me:{HIDDEN_VALUE}@res.example/?api-key=abc123",
    )
    assert run(["in.csv", "--show-config"]) == 0
    out, _ = capsys.readouterr()
    assert HIDDEN_VALUE not in out
    assert "abc123" not in out
    assert "https://***@res.example/?api-key=***" in out


def test_show_config_includes_the_schema_as_response_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--schema shows up as the request.response_format that will be sent."""
    (tmp_path / "answer.json").write_text('{"type": "object", "properties": {}}')
    assert run(["in.csv", "--show-config", "--schema", "answer.json"]) == 0
    table = _table(capsys.readouterr().out)
    source, value = table["request.response_format"]
    assert source == "schema answer.json (flag)"
    assert '"json_schema": {"name": "answer"' in value
