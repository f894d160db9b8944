"""
Several deployments as one, end to end: the real SDK over HTTP against several
simulators, each a deployment with its own quota, key, or Entra ID sign-in.
"""

from __future__ import annotations

import csv
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrunner.cli import run
from batchrunner.send.router import BREAKER_FAULTS
from batchrunner.simulator import SimConfig, SimulatorServer
from batchrunner.simulator.identity import IdentityServer, TokenIssuer
from tests.conftest import DEPLOYMENT
from tests.test_cli import prompts, read_jsonl, write_jsonl

MODEL = "gpt-4o-mini-2024-07-18"
KEYS = {
    "a": "sk-deployment-a-0123456789-SECRET",
    "b": "sk-deployment-b-9876543210-SECRET",
    "c": "sk-deployment-c-5555555555-SECRET",
}


@pytest.fixture
def servers() -> Iterator[Callable[..., SimulatorServer]]:
    """Starts simulators on demand (a key each); stops them all at the end."""
    started: list[SimulatorServer] = []

    def start(name: str, **config: Any) -> SimulatorServer:
        settings = {"retry_after_ms": 50, **config}
        server = SimulatorServer(
            SimConfig(api_key=KEYS[name], deployments={DEPLOYMENT: MODEL}, **settings)
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each deployment's key in its own variable, as api_key_env names them."""
    for name, key in KEYS.items():
        monkeypatch.setenv(f"{name.upper()}_KEY", key)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")


def entry(name: str, server: SimulatorServer, **more: Any) -> dict[str, Any]:
    """The settings entry of *server*, signed in with its key."""
    return {
        "name": name,
        "endpoint": server.url,
        "deployment": DEPLOYMENT,
        "api_key_env": f"{name.upper()}_KEY",
        **more,
    }


def job(tmp_path: Path, rows: int, *entries: dict[str, Any]) -> Path:
    """An input of *rows* prompts, and settings naming *entries*."""
    settings = {"deployments": list(entries), "request": {"max_tokens": 20}}
    (tmp_path / "config.yaml").write_text(json.dumps(settings))
    return write_jsonl(tmp_path / "job.jsonl", prompts(rows))


def records(tmp_path: Path) -> list[dict[str, Any]]:
    """The records of the run."""
    return read_jsonl(tmp_path / "job.results.jsonl")


def assert_each_row_ok_once(tmp_path: Path, rows: int) -> list[dict[str, Any]]:
    """Every row has exactly one record, and it is ok."""
    found = records(tmp_path)
    assert sorted(r["id"] for r in found) == sorted(f"r{i}" for i in range(rows))
    assert {r["status"] for r in found} == {"ok"}
    return found


def when(server: SimulatorServer, requests: int, act: Callable[[], None]) -> Any:
    """A thread that does *act* once *server* has received *requests* requests."""

    def watch() -> None:
        if server.ledger.wait_for(requests, timeout=60):
            act()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_traffic_follows_the_quotas_and_stays_within_them(
    servers: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    """1:3 quotas get about 1:3 of the rows, with next to no 429s; records and
    the summary say which deployment answered each."""
    a = servers("a", tpm=12_000, rpm=None, window=10.0)
    b = servers("b", tpm=36_000, rpm=None, window=10.0)
    source = job(tmp_path, 120, entry("a", a, tpm=12_000), entry("b", b, tpm=36_000))
    assert run([str(source), "-q", "--concurrency", "16"]) == 0
    found = assert_each_row_ok_once(tmp_path, 120)
    by = Counter(r["deployment"] for r in found)
    assert by == {"a": a.ledger.count(200), "b": b.ledger.count(200)}
    assert 0.15 <= by["a"] / 120 <= 0.35
    sent = a.ledger.count() + b.ledger.count()
    assert a.ledger.count(429) + b.ledger.count(429) <= 0.05 * sent
    summary = json.loads((tmp_path / "job.results.summary.json").read_text())
    shares = summary["deployments"]
    assert shares["a"]["rows_ok"] == by["a"] and shares["b"]["rows_ok"] == by["b"]
    assert shares["a"]["requests"] == a.ledger.count()
    assert shares["b"]["tokens"]["total"] > shares["a"]["tokens"]["total"]


def test_a_deployment_going_down_loses_no_row(
    servers: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    """One simulator stopped mid-run: every row still ends ok, once, on the other."""
    a = servers("a", latency=0.02)
    b = servers("b", latency=0.02)
    source = job(tmp_path, 200, entry("a", a), entry("b", b))
    stopper = when(a, 40, a.stop)
    assert run([str(source), "-q", "--concurrency", "8"]) == 0
    stopper.join()
    found = assert_each_row_ok_once(tmp_path, 200)
    by = Counter(r["deployment"] for r in found)
    assert by["a"] <= a.ledger.count(200) and by["a"] + by["b"] == 200
    assert by["b"] > 100  # a went down after about 40 of the 200


def test_the_secondary_takes_rows_only_while_the_primary_is_down(
    servers: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    """Priority 1 gets nothing while priority 0 answers, the rest once it is gone."""
    primary = servers("a", latency=0.01)
    secondary = servers("b")
    seen_before: list[int] = []

    def take_down() -> None:
        seen_before.append(secondary.ledger.count())
        primary.stop()

    source = job(tmp_path, 120, entry("a", primary), entry("b", secondary, priority=1))
    stopper = when(primary, 30, take_down)
    assert run([str(source), "-q", "--concurrency", "4"]) == 0
    stopper.join()
    assert seen_before == [0]
    found = assert_each_row_ok_once(tmp_path, 120)
    assert Counter(r["deployment"] for r in found)["b"] == secondary.ledger.count(200)
    assert secondary.ledger.count(200) > 0


def test_the_secondary_takes_rows_while_the_primary_is_throttled(
    servers: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    """When the primary starts answering 429, its rows go to the secondary at
    once, uncharged: no row fails."""
    primary = servers("a", latency=0.01)
    secondary = servers("b")
    seen_before: list[int] = []

    def throttle() -> None:
        seen_before.append(secondary.ledger.count())
        primary.config.retry_after_ms = 1000
        primary.config.fault_rates = {"429": 1.0}

    source = job(tmp_path, 100, entry("a", primary), entry("b", secondary, priority=1))
    stopper = when(primary, 30, throttle)
    assert run([str(source), "-q", "--concurrency", "4", "--max-attempts", "2"]) == 0
    stopper.join()
    assert seen_before == [0]
    assert primary.ledger.count(429) > 0
    found = assert_each_row_ok_once(tmp_path, 100)
    assert Counter(r["deployment"] for r in found)["b"] == secondary.ledger.count(200)
    assert secondary.ledger.count(200) > 0


def test_a_missing_deployment_is_dropped_and_the_others_answer(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 404 drops that deployment for the run with a log line; no row fails."""
    a = servers("a")
    b = servers("b")
    missing = entry("a", a) | {"deployment": "no-such-deployment"}
    source = job(tmp_path, 30, missing, entry("b", b))
    assert run([str(source), "--log-format", "text"]) == 0
    found = assert_each_row_ok_once(tmp_path, 30)
    assert {r["deployment"] for r in found} == {"b"}
    assert a.ledger.count(404) >= 1
    assert "deployment a dropped for this run" in capsys.readouterr().err


def test_every_deployment_refusing_its_key_exits_3(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both keys wrong: both are dropped, the run stops with exit 3, no row is ok."""
    a = servers("a")
    b = servers("b")
    monkeypatch.setenv("A_KEY", "wrong-key-for-a")
    monkeypatch.setenv("B_KEY", "wrong-key-for-b")
    source = job(tmp_path, 20, entry("a", a), entry("b", b))
    assert run([str(source), "--log-format", "text"]) == 3
    assert a.ledger.count(401) >= 1 and b.ledger.count(401) >= 1
    assert a.ledger.count(200) == b.ledger.count(200) == 0
    path = tmp_path / "job.results.jsonl"
    assert not path.exists() or all(r["status"] != "ok" for r in records(tmp_path))
    assert "every deployment refused our credentials" in capsys.readouterr().err


def test_one_key_refused_the_other_deployment_answers_everything(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 401 from one deployment is not the run's: exit 0, every row on the other."""
    a = servers("a")
    b = servers("b")
    monkeypatch.setenv("A_KEY", "wrong-key-for-a")
    source = job(tmp_path, 30, entry("a", a), entry("b", b))
    assert run([str(source), "-q"]) == 0
    found = assert_each_row_ok_once(tmp_path, 30)
    assert {r["deployment"] for r in found} == {"b"}


def test_mixed_auth_shares_one_token_and_leaks_no_secret(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One resource by key, two by Entra ID: one token fetch serves both, and
    neither key nor token is in any output, log line or file."""
    issuer = TokenIssuer(lifetime=3600)
    a = servers("a")
    b = servers("b", bearer_validator=issuer.validate)
    c = servers("c", bearer_validator=issuer.validate)
    (tmp_path / "bin").mkdir()
    (tmp_path / "home").mkdir()
    with IdentityServer(issuer) as identity:
        for name, value in {
            "BATCHRUNNER_AUTH": "managed_identity",
            "PATH": str(tmp_path / "bin"),
            "HOME": str(tmp_path / "home"),
            **identity.app_service_environment(),
        }.items():
            monkeypatch.setenv(name, value)
        by_token = [
            {k: v for k, v in entry(n, s).items() if k != "api_key_env"}
            for n, s in (("b", b), ("c", c))
        ]
        source = job(tmp_path, 60, entry("a", a), *by_token)
        code = run([str(source), "-v", "--log-format", "json", "--concurrency", "6"])
    assert code == 0
    assert issuer.ledger.fetches() == 1
    assert {e.auth for e in a.ledger.entries} == {"api-key"}
    assert {e.auth for e in b.ledger.entries + c.ledger.entries} == {"bearer"}
    found = assert_each_row_ok_once(tmp_path, 60)
    assert {r["deployment"] for r in found} == {"a", "b", "c"}
    out, err = capsys.readouterr()
    texts = [out, err] + [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    secrets = [*KEYS.values(), *(issued.token for issued in issuer.issued())]
    for secret in secrets:
        assert all(secret not in text for text in texts)


def test_progress_events_and_csv_results_name_the_deployments(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """JSON progress events break the counts down by deployment; CSV has the column."""
    a = servers("a")
    b = servers("b")
    source = job(tmp_path, 40, entry("a", a), entry("b", b))
    out = tmp_path / "job.csv"
    argv = [str(source), "--log-format", "json", "-o", str(out)]
    assert run([*argv, "--concurrency", "4"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    last = [e for e in events if e.get("event") == "progress"][-1]
    shares = last["deployments"]
    assert set(shares) == {"a", "b"}
    assert shares["a"]["rows_ok"] + shares["b"]["rows_ok"] == 40
    assert shares["a"]["requests"] == a.ledger.count()
    with out.open(newline="") as f:
        column = Counter(row["deployment"] for row in csv.DictReader(f))
    assert column == {"a": a.ledger.count(200), "b": b.ledger.count(200)}


def test_the_single_deployment_settings_are_not_used_and_a_line_says_so(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With deployments set, AZURE_OPENAI_ENDPOINT and --deployment get nothing."""
    a = servers("a")
    elsewhere = servers("b")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", elsewhere.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEYS["b"])
    source = job(tmp_path, 10, entry("a", a))
    argv = [str(source), "--deployment", "other", "--log-format", "text"]
    assert run(argv) == 0
    assert elsewhere.ledger.count() == 0 and a.ledger.count(200) == 10
    err = capsys.readouterr().err
    assert "AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_DEPLOYMENT/--deployment" in err
    assert "not used" in err


def test_a_deployment_answering_5xx_is_taken_out_after_a_few(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A deployment answering only 503 opens its breaker once, after a handful of
    requests; its rows go to the other and every row ends ok."""
    broken = servers("a", fault_rates={"503": 1.0})
    working = servers("b")
    source = job(tmp_path, 60, entry("a", broken), entry("b", working))
    argv = [str(source), "--log-format", "text", "--concurrency", "4"]
    assert run(argv) == 0
    found = assert_each_row_ok_once(tmp_path, 60)
    assert {r["deployment"] for r in found} == {"b"}
    outs = [
        x for x in capsys.readouterr().err.splitlines() if "deployment a is out" in x
    ]
    assert len(outs) == 1 and "trying it again in 5 s" in outs[0]
    # The faults that open it, and the requests already on their way.
    assert broken.ledger.count(503) <= BREAKER_FAULTS + 4


def test_the_environment_variable_runs_the_deployments_it_lists(
    servers: Callable[..., SimulatorServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """BATCHRUNNER_DEPLOYMENTS as JSON, no settings file: both answer, records
    carry the labels (the default one too), and the keys are nowhere."""
    a = servers("a")
    b = servers("b")
    unnamed = {k: v for k, v in entry("b", b).items() if k != "name"}
    monkeypatch.setenv("BATCHRUNNER_DEPLOYMENTS", json.dumps([entry("a", a), unnamed]))
    source = write_jsonl(tmp_path / "job.jsonl", prompts(40))
    assert run([str(source), "--log-format", "json", "--concurrency", "4"]) == 0
    found = assert_each_row_ok_once(tmp_path, 40)
    default = f"{b.url.split('://')[1]}/{DEPLOYMENT}"
    assert Counter(r["deployment"] for r in found) == {
        "a": a.ledger.count(200),
        default: b.ledger.count(200),
    }
    assert a.ledger.count(200) > 0 and b.ledger.count(200) > 0
    out, err = capsys.readouterr()
    texts = [out, err] + [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    assert all(key not in text for key in KEYS.values() for text in texts)
