"""Settings: precedence, parsing, sources and secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchrunner.config.layers import build_settings
from batchrunner.config.parsing import parse_auth, parse_duration, parse_shard
from batchrunner.config.sections import AuthSettings
from batchrunner.errors import ConfigError
from batchrunner.records import Api


def test_command_line_beats_environment_beats_file(tmp_path: Path) -> None:
    """Each layer overrides the one below it, and the source is remembered."""
    config = tmp_path / "config.yaml"
    config.write_text("concurrency: 4\ntimeout: 5\nmax_attempts: 2\n")
    settings = build_settings(
        {"concurrency": 32},
        {"BATCHRUNNER_TIMEOUT": "7", "AZURE_OPENAI_DEPLOYMENT": "dep"},
        config,
    )
    assert settings.concurrency == 32
    assert settings.timeout == 7.0
    assert settings.max_attempts == 2
    assert settings.deployment == "dep"
    assert settings.sources["concurrency"] == "flag"
    assert settings.sources["timeout"] == "env BATCHRUNNER_TIMEOUT"
    assert settings.sources["max_attempts"] == f"file {config}"
    assert settings.sources["rpm"] == "default"


def test_sections_are_read(tmp_path: Path) -> None:
    """input, request and prices sections land in the settings."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "api: embeddings\ninput:\n  prompt_column: text\n  template: 'Say {x}'\n"
        "request:\n  temperature: 0.2\nprices:\n  my-model: {input: 1, output: 2}\n"
    )
    settings = build_settings({}, {}, config)
    assert settings.api is Api.EMBEDDINGS
    assert settings.input.prompt_column == "text"
    assert settings.input.template == "Say {x}"
    assert settings.request == {"temperature": 0.2}
    assert settings.price_for("my-model-2024") == (1.0, 2.0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "concurency: 4\n", "did you mean 'concurrency'", id="a-misspelt-key"
        ),
        pytest.param("concurrency: 0\n", "concurrency", id="no-concurrency"),
        pytest.param("deadline: soon\n", "not a duration", id="a-vague-deadline"),
        pytest.param("shard: 4/4\n", "out of range", id="a-shard-out-of-range"),
        pytest.param(
            "input:\n  prompt_colum: x\n", "did you mean 'input.prompt_column'",
            id="a-misspelt-key-in-a-section",
        ),
        pytest.param("concurrency: [1\n", "not valid YAML", id="broken-yaml"),
        pytest.param(
            "auth: magic\n", "not one of auto, api_key, entra",
            id="an-unknown-auth-kind",
        ),
        pytest.param(
            "auth: {kind: chain}\n", "go together", id="a-chain-without-kinds"
        ),
        pytest.param(
            "auth: [managed_identity, entra]\n", "'entra' is not one of",
            id="an-unknown-kind-in-a-chain",
        ),
        pytest.param(
            "auth: {kind: azure_cli, client_id: x}\n", "client_id does not apply",
            id="a-client-id-for-azure-cli",
        ),
        pytest.param(
            "auth: {knd: entra}\n", "unknown key 'knd'", id="a-misspelt-auth-key"
        ),
    ],
)  # fmt: skip
def test_bad_settings_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    """A wrong setting is a ConfigError that names the file and what is wrong."""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        build_settings({}, {}, config)
    assert str(config) in str(info.value)


def test_api_key_is_never_shown() -> None:
    """repr and redacted() hide the key."""
    settings = build_settings({}, {"AZURE_OPENAI_API_KEY": "sekrit-key-123"}, None)
    assert settings.api_key == "sekrit-key-123"
    assert "sekrit" not in repr(settings)
    assert settings.redacted()["api_key"] == "***"
    assert settings.sources["api_key"] == "env AZURE_OPENAI_API_KEY"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("55m", 3300.0), ("1h30m", 5400.0), ("2.5h", 9000.0)],
)
def test_durations(text: str, seconds: float) -> None:
    """Durations read as people write them."""
    assert parse_duration(text) == seconds


def test_shards() -> None:
    """I/N parses, and out-of-range shards are refused."""
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(ValueError, match="out of range"):
        parse_shard("4/4")
    with pytest.raises(ValueError, match="I/N"):
        parse_shard("a/b")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "managed_identity", AuthSettings("managed_identity"), id="a-kind"
        ),
        pytest.param(
            "azure-cli", AuthSettings("azure_cli"), id="a-kind-written-with-a-dash"
        ),
        pytest.param(
            "managed_identity, azure_cli",
            AuthSettings("chain", ("managed_identity", "azure_cli")),
            id="comma-joined-kinds",
        ),
        pytest.param(
            ["workload_identity"], AuthSettings("chain", ("workload_identity",)),
            id="a-list-of-kinds",
        ),
        pytest.param(
            {"kind": "managed_identity", "client_id": "abc"},
            AuthSettings("managed_identity", client_id="abc"),
            id="a-kind-with-a-client-id",
        ),
        pytest.param(
            {"chain": ["managed_identity", "azure_cli"], "client_id": "abc"},
            AuthSettings("chain", ("managed_identity", "azure_cli"), "abc"),
            id="a-chain-with-a-client-id",
        ),
    ],
)  # fmt: skip
def test_auth_setting_shapes(value: object, expected: AuthSettings) -> None:
    """A kind, a list, comma-joined kinds and a mapping all read as expected."""
    assert parse_auth(value) == expected


def test_tokens_in_the_environment_are_secrets() -> None:
    """Both token variables land in ad_token, shown as *** and never in repr."""
    settings = build_settings({}, {"AZURE_OPENAI_AD_TOKEN": "tok-secret-1"}, None)
    assert settings.ad_token == "tok-secret-1"
    assert settings.redacted()["ad_token"] == "***"
    assert "tok-secret-1" not in repr(settings)
    legacy = build_settings(
        {}, {"OPENAI_API_TYPE": "azure_ad", "OPENAI_API_KEY": "tok-secret-2"}, None
    )
    assert legacy.ad_token == "tok-secret-2"
    assert legacy.sources["ad_token"] == "env OPENAI_API_KEY"
    plain = build_settings({}, {"OPENAI_API_KEY": "sk-not-azure"}, None)
    assert plain.ad_token is None
    # The printed settings stay plain JSON.
    assert json.loads(json.dumps(plain.redacted()["auth"]))["kind"] == "auto"
