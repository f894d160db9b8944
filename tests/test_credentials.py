"""
Entra ID end to end: the real azure-identity credentials against the fake
identity endpoints, the real SDK against the simulator, which accepts only the
tokens those endpoints issued.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrunner.cli import run
from batchrunner.errors import EXIT_AUTH
from batchrunner.simulator import SimulatorServer
from batchrunner.simulator.identity import (
    CLIENT_ID,
    IdentityServer,
    TestCA,
    TokenIssuer,
    install_fake_az,
)
from tests.conftest import DEPLOYMENT, PYTHON, child_env
from tests.test_cli import prompts, read_jsonl, write_jsonl


@pytest.fixture
def issuer() -> TokenIssuer:
    """The issuer behind every fake identity endpoint: hour-long tokens."""
    return TokenIssuer(lifetime=3600)


@pytest.fixture
def identity(
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[IdentityServer]:
    """
    The fake identity endpoints, the simulator taking their tokens, and an
    environment with no API key and nothing real to authenticate with: no ``az``
    on PATH, an empty home, and IMDS answered by the fake ("no identity").
    """
    simulator.config.bearer_validator = issuer.validate
    (tmp_path / "bin").mkdir()
    (tmp_path / "home").mkdir()
    with IdentityServer(issuer) as server:
        setenv(
            monkeypatch,
            AZURE_OPENAI_ENDPOINT=simulator.url,
            OPENAI_API_VERSION="2024-10-21",
            AZURE_OPENAI_DEPLOYMENT=DEPLOYMENT,
            PATH=str(tmp_path / "bin"),
            HOME=str(tmp_path / "home"),
            **server.imds_environment(),
        )
        yield server


def setenv(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Set every one of *variables* for this test."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def job(tmp_path: Path, rows: int, name: str = "job") -> Path:
    """A JSONL input of *rows* prompts."""
    return write_jsonl(tmp_path / f"{name}.jsonl", prompts(rows))


def results(tmp_path: Path, name: str = "job") -> list[dict[str, Any]]:
    """The records of the run on *name*."""
    return read_jsonl(tmp_path / f"{name}.results.jsonl")


def assert_no_token(issuer: TokenIssuer, *texts: str) -> None:
    """No token the issuer handed out appears in any of *texts*."""
    for issued in issuer.issued():
        for text in texts:
            assert issued.token not in text


# --- the credentials --------------------------------------------------------------


def test_managed_identity_from_the_container_apps_endpoint(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ManagedIdentityCredential gets one token from IDENTITY_ENDPOINT; rows pass."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    assert run([str(job(tmp_path, 20)), "-v"]) == 0
    assert issuer.ledger.fetches("app_service") == 1
    assert {(e.auth, e.status) for e in simulator.ledger.entries} == {("bearer", 200)}
    assert all(r["status"] == "ok" for r in results(tmp_path))
    out, err = capsys.readouterr()
    assert "authenticated with Entra ID (managed_identity)" in err
    assert_no_token(issuer, out, err, (tmp_path / "job.results.jsonl").read_text())


def test_a_user_assigned_identity_is_named_by_its_client_id(
    identity: IdentityServer,
    issuer: TokenIssuer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """auth.client_id reaches the endpoint; an unknown one is exit 3 with a hint."""
    setenv(monkeypatch, **identity.app_service_environment())
    config = tmp_path / "config.yaml"
    config.write_text(f"auth:\n  kind: managed_identity\n  client_id: {CLIENT_ID}\n")
    assert run([str(job(tmp_path, 3))]) == 0
    assert [i.client_id for i in issuer.issued()] == [CLIENT_ID]
    config.write_text("auth: {kind: managed_identity, client_id: not-assigned-here}\n")
    capsys.readouterr()
    assert run([str(job(tmp_path, 3, "other"))]) == EXIT_AUTH
    err = capsys.readouterr().err
    assert "No managed identity found for specified ClientId" in err
    assert "auth.client_id or AZURE_CLIENT_ID" in err


@pytest.mark.parametrize(
    ("auth", "imds_identity", "fake_az", "rows", "source", "only_fetch"),
    [
        # With no App Service variables, managed identity asks IMDS (here, the fake).
        pytest.param(
            "managed_identity", True, False, 5, "imds", True,
            id="managed-identity-on-a-vm-through-imds",
        ),
        # AzureCliCredential runs `az account get-access-token`; its token works.
        pytest.param(
            "azure_cli", False, True, 10, "azure_cli", True,
            id="azure-cli-with-a-fake-az-on-path",
        ),
        # With no key and no auth setting, DefaultAzureCredential reaches the az token.
        pytest.param(
            None, False, True, 5, "azure_cli", False,
            id="the-default-credential-finds-az-login",
        ),
    ],
)  # fmt: skip
def test_a_credential_kind_takes_one_token_from_its_source(
    identity: IdentityServer,
    issuer: TokenIssuer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    auth: str | None,
    imds_identity: bool,
    fake_az: bool,
    rows: int,
    source: str,
    only_fetch: bool,
) -> None:
    """Each credential kind, or the default chain, fetches one token from its source."""
    issuer.imds_identity = imds_identity
    if fake_az:
        install_fake_az(tmp_path / "bin", identity)
    if auth is not None:
        setenv(monkeypatch, BATCHRUNNER_AUTH=auth)
    assert run([str(job(tmp_path, rows))]) == 0
    assert issuer.ledger.fetches(source) == 1
    if only_fetch:  # the default chain also asks IMDS, which finds no identity
        assert issuer.ledger.count() == 1


def test_the_chain_falls_through_managed_identity_to_azure_cli(
    identity: IdentityServer,
    issuer: TokenIssuer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Off Azure, managed identity finds no identity and az login answers instead."""
    install_fake_az(tmp_path / "bin", identity)
    (tmp_path / "config.yaml").write_text("auth: [managed_identity, azure_cli]\n")
    assert run([str(job(tmp_path, 10))]) == 0
    assert issuer.ledger.count("imds", 400) >= 1
    assert issuer.ledger.fetches("imds") == 0
    assert issuer.ledger.fetches("azure_cli") == 1


def test_workload_identity_with_a_federated_token_over_https(
    simulator: SimulatorServer, issuer: TokenIssuer, tmp_path: Path
) -> None:
    """WorkloadIdentityCredential trades the token file for a token at a TLS Entra."""
    ca = TestCA()
    simulator.config.bearer_validator = issuer.validate
    with IdentityServer(issuer, tls=ca.server_context()) as server:
        env = child_env(simulator, BATCHRUNNER_AUTH="workload_identity")
        del env["AZURE_OPENAI_API_KEY"]
        env.update(server.workload_environment(tmp_path / "sa-token"))
        # aiohttp reads the CA bundle when it starts, so a new process gets it.
        env["SSL_CERT_FILE"] = str(ca.write_bundle(tmp_path / "ca.pem"))
        env["HOME"] = str(tmp_path)
        source = job(tmp_path, 10)
        done = subprocess.run(
            [PYTHON, "-m", "batchrunner", str(source), "--log-format", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert issuer.ledger.fetches("entra") == 1
    assert simulator.ledger.count(200) == 10
    assert_no_token(issuer, done.stdout, done.stderr)


# --- refresh, failures and refusals ---------------------------------------------


def test_a_refresh_failing_while_the_token_is_valid_fails_no_row(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The endpoint fails at refresh time; the old token carries the run meanwhile."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    issuer.lifetime = 4
    issuer.fail(status=400, times=2, skip=1)  # the first fetch works, refreshes not
    # 45 rows at 600 a minute: about 4.5 s, past the refresh at about 2 s.
    assert run([str(job(tmp_path, 45)), "--rpm", "600", "--concurrency", "4"]) == 0
    assert issuer.ledger.count("app_service", 400) == 2
    assert issuer.ledger.fetches("app_service") >= 2
    assert simulator.ledger.count(401) == 0
    assert all(r["status"] == "ok" for r in results(tmp_path))


def test_a_refresh_failing_until_expiry_stops_the_run_resumably(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Rows go on until the token expires, then exit 3; a re-run finishes the file."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    issuer.lifetime = 3
    issuer.fail(status=400, skip=1)  # from the first refresh on
    source = job(tmp_path, 100)
    assert run([str(source), "--rpm", "600", "--concurrency", "4"]) == EXIT_AUTH
    records = results(tmp_path)
    assert 0 < len(records) < 100
    assert {r["status"] for r in records} == {"ok"}
    assert simulator.ledger.count(401) == 0
    assert "no Entra ID token" in capsys.readouterr().err
    issuer.recover()
    assert run([str(source), "--concurrency", "16"]) == 0
    assert len({r["id"] for r in results(tmp_path)}) == 100


def test_an_identity_failing_at_start_exits_3_before_any_request(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One fetch (with azure-core's own retries) decides, not one per waiting row."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    issuer.fail(status=500)
    assert run([str(job(tmp_path, 500)), "--concurrency", "100"]) == EXIT_AUTH
    assert simulator.ledger.count() == 0
    # azure-core tries a 500 four times; a hundred waiting rows would be 400.
    assert issuer.ledger.count("app_service") == 4
    err = capsys.readouterr().err
    assert "ManagedIdentityCredential" in err
    assert "Cognitive Services OpenAI User" in err


@pytest.mark.timeout(180)  # some 10 s alone; room for a busy CI machine
def test_2000_rows_at_concurrency_100_take_one_token(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """However many rows and however much concurrency, one token fetch serves all."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    assert run([str(job(tmp_path, 2000)), "--concurrency", "100", "-q"]) == 0
    assert issuer.ledger.count() == 1
    assert simulator.ledger.count(200) == 2000


def test_short_lived_tokens_are_refreshed_ahead_without_a_401(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """3 s tokens over a ~9 s run: a handful of fetches, and no request refused."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    issuer.lifetime = 3
    source = job(tmp_path, 90)
    assert run([str(source), "--rpm", "600", "--concurrency", "8"]) == 0
    assert 4 <= issuer.ledger.fetches() <= 12
    assert simulator.ledger.count(401) == 0
    assert simulator.ledger.count(200) == 90


def test_a_revoked_token_is_replaced_once_and_its_rows_succeed(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Revoked mid-run: every row carrying it gets a 401, one refresh, then ok."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    seen = 0
    lock = threading.Lock()

    def validate_and_revoke(token: str) -> bool:
        nonlocal seen
        with lock:
            seen += 1
            if seen == 30:
                issuer.revoke()
        return issuer.validate(token)

    simulator.config.bearer_validator = validate_and_revoke
    assert run([str(job(tmp_path, 100)), "--concurrency", "8", "-v"]) == 0
    assert issuer.ledger.fetches() == 2
    refused = simulator.ledger.count(401)
    assert 1 <= refused <= 8
    records = results(tmp_path)
    assert {r["status"] for r in records} == {"ok"}
    assert sum(r["attempts"] == 2 for r in records) == refused
    out, err = capsys.readouterr()
    assert_no_token(issuer, out, err, (tmp_path / "job.results.jsonl").read_text())


def test_a_token_refused_twice_ends_the_run_with_exit_3(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When the fresh token is refused too (a lost role), the run stops with exit 3."""
    setenv(monkeypatch, BATCHRUNNER_AUTH="managed_identity")
    setenv(monkeypatch, **identity.app_service_environment())
    simulator.config.bearer_validator = lambda token: False
    assert run([str(job(tmp_path, 50)), "--concurrency", "1"]) == EXIT_AUTH
    assert issuer.ledger.fetches() == 2
    assert simulator.ledger.count(401) == 2
    assert "401" in capsys.readouterr().err


def test_no_credential_exits_3_before_any_request_listing_what_was_tried(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No key and no identity anywhere: exit 3, each credential's failure, the fix."""
    assert run([str(job(tmp_path, 10))]) == EXIT_AUTH
    assert simulator.ledger.count() == 0
    results = tmp_path / "job.results.jsonl"  # held (locked) before auth, but empty
    assert not results.exists() or results.stat().st_size == 0
    err = capsys.readouterr().err
    for tried in (
        "EnvironmentCredential",
        "WorkloadIdentityCredential",
        "ManagedIdentityCredential",
        "AzureCliCredential: Azure CLI not found on path",
    ):
        assert tried in err
    for hint in ("az login", "Cognitive Services OpenAI User", "client id"):
        assert hint in err


def test_a_chain_with_nothing_configured_lists_each_member(
    identity: IdentityServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A chain reports every member's reason, workload identity's missing setup too."""
    install_fake_az(tmp_path / "bin", None)  # installed, not logged in
    (tmp_path / "config.yaml").write_text(
        "auth: {chain: [workload_identity, managed_identity, azure_cli]}\n"
    )
    assert run([str(job(tmp_path, 3))]) == EXIT_AUTH
    err = capsys.readouterr().err
    assert "workload_identity, then managed_identity, then azure_cli" in err
    assert "WorkloadIdentityCredential: " in err
    assert "ManagedIdentityCredential: " in err
    assert "AzureCliCredential: Please run 'az login'" in err


# --- tokens handed in -----------------------------------------------------------


def test_a_static_token_from_azure_openai_ad_token(
    identity: IdentityServer,
    issuer: TokenIssuer,
    simulator: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """AZURE_OPENAI_AD_TOKEN is sent as it is; once refused, the run stops."""
    token = issuer.issue("https://cognitiveservices.azure.com", "test").token
    setenv(monkeypatch, AZURE_OPENAI_AD_TOKEN=token)
    assert run([str(job(tmp_path, 5)), "-v"]) == 0
    assert issuer.ledger.count() == 0
    assert {e.auth for e in simulator.ledger.entries} == {"bearer"}
    issuer.revoke(token)
    again = job(tmp_path, 5, "again")
    assert run([str(again), "--concurrency", "1"]) == EXIT_AUTH
    assert simulator.ledger.count(401) == 1
    out, err = capsys.readouterr()
    assert_no_token(issuer, out, err)


def test_openai_v0_azure_ad_form_works_and_names_the_new_way(
    identity: IdentityServer,
    issuer: TokenIssuer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """OPENAI_API_TYPE=azure_ad, the token in OPENAI_API_KEY: used, with a warning."""
    token = issuer.issue("https://cognitiveservices.azure.com", "test").token
    setenv(monkeypatch, OPENAI_API_TYPE="azure_ad", OPENAI_API_KEY=token)
    assert run([str(job(tmp_path, 3))]) == 0
    err = capsys.readouterr().err
    assert "set AZURE_OPENAI_AD_TOKEN instead" in err
    assert token not in err


def test_an_api_key_still_wins_in_auto(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """With a key set and no auth setting, the key is used and nothing is fetched."""
    assert run([str(job(tmp_path, 3))]) == 0
    assert {e.auth for e in azure_env.ledger.entries} == {"api-key"}
