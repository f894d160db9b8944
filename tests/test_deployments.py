"""``deployments:``: entries from the file or the environment, every fault caught."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.config.layers import build_settings
from batchrunner.errors import ConfigError
from batchrunner.simulator import SimulatorServer

KEY = "sk-west-0123456789abcdef-SECRET"


def settings_from(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    """Settings built from a file holding *text*."""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return build_settings({}, environ or {}, config)


def test_entries_are_read_with_defaults_and_keys(tmp_path: Path) -> None:
    """Every key lands; the label defaults to host:port/deployment; the key is read."""
    settings = settings_from(
        tmp_path,
        "deployments:\n"
        "  - endpoint: https://west.openai.azure.com\n"
        "    deployment: gpt-4o\n"
        "    api_key_env: WEST_KEY\n"
        "    tpm: 60000\n"
        "    rpm: 360\n"
        "  - endpoint: http://127.0.0.1:8001\n"
        "    deployment: gpt-4o-mini\n"
        "    name: spare\n"
        "    priority: 1\n"
        "    weight: 2.5\n",
        {"WEST_KEY": KEY},
    )
    west, spare = settings.deployments
    assert west.name == "west.openai.azure.com/gpt-4o"
    assert (west.api_key, west.tpm, west.rpm, west.priority) == (KEY, 60000, 360, 0)
    assert spare.name == "spare" and spare.api_key is None
    assert (spare.priority, spare.weight, spare.tpm) == (1, 2.5, None)
    assert KEY not in repr(settings)


def test_the_environment_gives_the_list_as_json(tmp_path: Path) -> None:
    """BATCHRUNNER_DEPLOYMENTS holds the same list in JSON, and wins over the file."""
    entries = [{"endpoint": "http://127.0.0.1:9/", "deployment": "d", "name": "x"}]
    config = tmp_path / "config.yaml"
    config.write_text("deployments:\n  - {endpoint: https://a.b, deployment: e}\n")
    settings = build_settings(
        {}, {"BATCHRUNNER_DEPLOYMENTS": json.dumps(entries)}, config
    )
    assert [d.name for d in settings.deployments] == ["x"]
    assert settings.sources["deployments"] == "env BATCHRUNNER_DEPLOYMENTS"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ("[]", "must be a list of entries"),
        ("[{deployment: d}]", "deployments[0]: no 'endpoint' given"),
        ("[{endpoint: https://a.b}]", "deployments[0]: no 'deployment' given"),
        ("[{endpoint: 'west.example', deployment: d}]", "is not a URL"),
        ("[{endpoint: 'ftp://a.b', deployment: d}]", "is not a URL"),
        ("[{endpoint: 'https://a.b:port', deployment: d}]", "is not a URL"),
        (
            "[{endpoint: https://a.b, deployment: d, tpm: -5}]",
            "deployments[0] (a.b/d): tpm -5 is not a whole number",
        ),
        ("[{endpoint: https://a.b, deployment: d, rpm: many}]", "rpm 'many'"),
        ("[{endpoint: https://a.b, deployment: d, weight: 0}]", "weight 0 is not"),
        ("[{endpoint: https://a.b, deployment: d, priority: 1.5}]", "priority 1.5"),
        ("[{endpoint: https://a.b, deployment: d, tmp: 5}]", "did you mean 'tpm'"),
        (
            "[{endpoint: https://a.b, deployment: d},"
            " {endpoint: 'https://a.b', deployment: d}]",
            "deployments[1] has the label 'a.b/d', as deployments[0] has",
        ),
        (
            "[{endpoint: https://a.b, deployment: d, api_key_env: NOPE_KEY}]",
            "api_key_env names 'NOPE_KEY', which is not set",
        ),
        ("[just-a-string]", "deployments[0] must be a mapping"),
        (
            "[{endpoint: https://a.b, deployment: d, tpm: .inf}]",
            "tpm inf is not a finite number",
        ),
        ("[{endpoint: https://a.b, deployment: d, weight: .inf}]", "weight inf"),
        ("[{endpoint: https://a.b, deployment: d, weight: .nan}]", "weight nan"),
        ("[{endpoint: https://a.b, deployment: [d, e]}]", "deployment ['d', 'e']"),
        ("[{endpoint: {url: https://a.b}, deployment: d}]", "is not text"),
        ("[{endpoint: https://a.b, deployment: d, name: [x]}]", "name ['x']"),
        (
            "[{endpoint: https://a.b, deployment: d, api_key_env: [K]}]",
            "api_key_env ['K'] is not text",
        ),
        (
            "[{endpoint: https://a.b, deployment: 'gpt 4o'}]",
            "deployments[0] (a.b/gpt 4o): deployment 'gpt 4o' cannot be",
        ),
        ("[{endpoint: 'https://a b.c', deployment: d}]", "is not a URL"),
        (
            "[{endpoint: https://a.b, deployment: d},"
            " {name: backup, endpoint: 'ftp://c.d', deployment: d}]",
            "deployments[1] (backup): endpoint 'ftp://c.d' is not a URL",
        ),
    ],
)
def test_a_bad_entry_is_named_with_its_fault(
    tmp_path: Path, entries: str, expected: str
) -> None:
    """Each fault names the entry (index and label) and what is wrong with it."""
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, f"deployments: {entries}\n")
    assert expected in str(caught.value)
    assert str(tmp_path / "config.yaml") in str(caught.value)


def test_bad_json_in_the_environment_is_a_config_error() -> None:
    """A BATCHRUNNER_DEPLOYMENTS that is not JSON says so and where."""
    with pytest.raises(ConfigError, match=r"BATCHRUNNER_DEPLOYMENTS.*not valid JSON"):
        build_settings({}, {"BATCHRUNNER_DEPLOYMENTS": "[{endpoint"}, None)


def test_a_bad_entry_exits_2_before_anything_is_sent(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    simulator: SimulatorServer,
) -> None:
    """The command stops with exit 2 and one line; the simulator received nothing."""
    # A run earlier in this process leaves its log handler on a closed stderr.
    monkeypatch.setattr(logging.getLogger("batchrunner"), "handlers", [])
    source = tmp_path / "job.jsonl"
    source.write_text('{"id": "1", "prompt": "hi"}\n')
    (tmp_path / "config.yaml").write_text(
        f"deployments:\n  - {{endpoint: {simulator.url}, deployment: gpt-4o-mini}}\n"
        f"  - {{endpoint: {simulator.url}, deployment: gpt-4o-mini, tpm: -1}}\n"
    )
    assert run([str(source)]) == 2
    err = capsys.readouterr().err
    assert "deployments[1]" in err and "tpm -1" in err
    assert "Traceback" not in err
    assert simulator.ledger.count() == 0
    assert not (tmp_path / "job.results.jsonl").exists()


def test_show_config_lists_entries_with_keys_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--show-config shows each entry, its key as ***, and never the key itself."""
    monkeypatch.setenv("WEST_KEY", KEY)
    (tmp_path / "config.yaml").write_text(
        "deployments:\n"
        "  - {endpoint: 'https://west.example', deployment: d, api_key_env: WEST_KEY}\n"
    )
    source = tmp_path / "job.jsonl"
    source.write_text('{"id": "1", "prompt": "hi"}\n')
    assert run([str(source), "--show-config"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("deployments"))
    assert "west.example/d" in line and "WEST_KEY" in line and '"***"' in line
    assert KEY not in out


@pytest.mark.parametrize(
    ("flag", "expected"), [("--simulate", "--simulate"), ("--mode=batch", "--mode")]
)
def test_one_deployment_modes_refuse_several_before_sending(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    simulator: SimulatorServer,
    flag: str,
    expected: str,
) -> None:
    """--simulate and --mode batch take one deployment: with several, exit 2 at once."""
    monkeypatch.setattr(logging.getLogger("batchrunner"), "handlers", [])
    source = tmp_path / "job.jsonl"
    source.write_text('{"id": "1", "prompt": "hi"}\n')
    (tmp_path / "config.yaml").write_text(
        f"deployments:\n  - {{endpoint: {simulator.url}, deployment: gpt-4o-mini}}\n"
    )
    assert run([str(source), flag]) == 2
    assert expected in capsys.readouterr().err
    assert simulator.ledger.count() == 0
