"""
Why a run stopped, in the service's own words, and with the exit code a
scheduler can act on (issue 14): a service that words its errors its own way
(FastAPI's ``{"detail": …}``, a 404 without a ``code``), and failures every row
shares.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.foreign import (
    KEY_REFUSED,
    MISSING,
    NOT_FOUND,
    foreign_simulator,
    records_of,
    summary_of,
    write_prompts,
)


@pytest.fixture
def foreign(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorServer]:
    """The simulator answering as Microsoft's did, the environment pointing at it."""
    with foreign_simulator(monkeypatch) as server:
        yield server


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_refused_key_shows_the_services_detail(
    foreign: SimulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 401 whose body is {"detail": …} stops the run (exit 3) with that text."""
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "sk-not-the-key")
    source = write_prompts(tmp_path / "k.jsonl", 20)
    assert run([str(source), "--concurrency", "1", "--log-format", "text"]) == 3
    stopped = summary_of(tmp_path / "k.results.jsonl")["stopped"]
    assert KEY_REFUSED in stopped
    assert "None" not in stopped
    assert KEY_REFUSED in capsys.readouterr().err


def test_missing_deployment_without_a_code_shows_the_services_text(
    foreign: SimulatorServer, tmp_path: Path
) -> None:
    """A 404 without an error code says what the service said, never "(None)"."""
    source = write_prompts(tmp_path / "d.jsonl", 50)
    assert run([str(source), "--deployment", MISSING, "--concurrency", "1"]) == 1
    results = tmp_path / "d.results.jsonl"
    stopped = summary_of(results)["stopped"]
    assert NOT_FOUND in stopped
    assert "None" not in stopped
    errors = [r["error"] for r in records_of(results)]
    assert errors
    assert {e["message"] for e in errors} == {NOT_FOUND}


def test_every_row_a_server_error_stops_with_75(
    foreign: SimulatorServer, tmp_path: Path
) -> None:
    """Ten rows in a row failing with a 5xx is an outage: exit 75, re-run later."""
    foreign.config.fault_rates = {"500": 1.0}
    source = write_prompts(tmp_path / "f.jsonl", 100)
    args = [str(source), "--max-attempts", "1", "--concurrency", "1"]
    assert run(args) == 75
    assert 10 <= foreign.ledger.count() == foreign.ledger.count(500) < 20
    assert "re-run later" in summary_of(tmp_path / "f.results.jsonl")["stopped"]
    foreign.config.fault_rates = {}
    assert run(args) == 0  # the outage over, a re-run finishes the file


def test_a_refused_connection_on_every_row_stops_with_75(
    foreign: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody listening at the endpoint is cleared by a later run: exit 75."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    source = write_prompts(tmp_path / "c.jsonl", 100)
    args = [str(source), "--max-attempts", "1", "--concurrency", "2"]
    assert run(args) == 75
    results = tmp_path / "c.results.jsonl"
    failed = records_of(results)
    assert 10 <= len(failed) < 100
    assert {r["error"]["type"] for r in failed} == {"APIConnectionError"}
    assert "re-run later" in summary_of(results)["stopped"]
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", foreign.url)
    assert run(args) == 0
    assert foreign.ledger.count() == 100


def test_a_request_refused_on_every_row_stops_with_1(
    foreign: SimulatorServer, tmp_path: Path
) -> None:
    """Every row refused with a 400 fails again unchanged: exit 1, fix it first."""
    (tmp_path / "config.yaml").write_text("request:\n  n: 1000\n")  # 1-128 allowed
    source = write_prompts(tmp_path / "b.jsonl", 100)
    assert run([str(source), "--concurrency", "1"]) == 1
    assert 10 <= foreign.ledger.count() == foreign.ledger.count(400) < 20
    stopped = summary_of(tmp_path / "b.results.jsonl")["stopped"]
    assert "Fix the cause" in stopped
    assert "None" not in stopped


@pytest.mark.parametrize(
    "body",
    [
        {"error": {"message": "the words"}},
        {"error": "the words"},
        {"message": "the words"},
        {"detail": "the words"},
        {"detail": [{"loc": ["path"], "msg": "the words"}]},
        {"title": "the words", "status": 404},
        {"error": {"code": None, "message": None, "detail": "the words"}},
    ],
)
def test_the_services_words_are_found_wherever_the_body_has_them(
    foreign: SimulatorServer, tmp_path: Path, body: dict[str, object]
) -> None:
    """Each shape of error body a service may send gives its text to the record."""
    foreign.config.not_found_body = body
    source = write_prompts(tmp_path / "w.jsonl", 3)
    assert run([str(source), "--deployment", MISSING, "--concurrency", "1"]) == 1
    results = tmp_path / "w.results.jsonl"
    assert {r["error"]["message"] for r in records_of(results)} == {"the words"}
    assert "(404: the words)" in summary_of(results)["stopped"]
