"""
A spend cap holds whatever model the answers report (issue 14): answers are
priced as the settings name the model, and a cap with no price to go by refuses
to start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrunner.cli import run
from batchrunner.config.price_table import DEFAULT_PRICES
from batchrunner.config.prices import answer_price, is_version_of
from batchrunner.config.settings import Settings
from batchrunner.simulator import SimulatorServer
from tests.foreign import (
    REPORTED_MODEL,
    foreign_simulator,
    records_of,
    summary_of,
    write_prompts,
)

CAP = 0.0005
#: gpt-4o-mini's built-in price, USD per million tokens in and out.
PRICE_IN, PRICE_OUT = DEFAULT_PRICES["gpt-4o-mini"]


@pytest.fixture
def foreign(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorServer]:
    """The simulator answering as Microsoft's did, the environment pointing at it."""
    with foreign_simulator(monkeypatch) as server:
        yield server


def spent_by(records: list[dict[str, Any]]) -> float:
    """What the ok *records* cost at gpt-4o-mini's price."""
    total = 0.0
    for record in records:
        if record["status"] == "ok":
            usage = record["usage"]
            total += usage["prompt_tokens"] * PRICE_IN / 1e6
            total += usage["completion_tokens"] * PRICE_OUT / 1e6
    return total


def test_cap_holds_when_answers_report_an_unpriced_model(
    foreign: SimulatorServer, tmp_path: Path
) -> None:
    """Answers reporting gpt-3.5-turbo are charged as gpt-4o-mini: the cap holds."""
    (tmp_path / "config.yaml").write_text("request:\n  max_tokens: 50\n")
    source = write_prompts(tmp_path / "j.jsonl", 200)
    code = run([str(source), "--max-cost", str(CAP), "--concurrency", "8"])
    assert code == 75
    records = records_of(tmp_path / "j.results.jsonl")
    assert {r["model"] for r in records} == {REPORTED_MODEL}
    # Every request the service received is a recorded, paid-for row …
    assert 0 < foreign.ledger.count() == len(records) < 200
    # … and together they cost no more than the cap (max_tokens bounds each one).
    assert spent_by(records) <= CAP
    summary = summary_of(tmp_path / "j.results.jsonl")
    assert summary["estimated_cost_usd"] == pytest.approx(spent_by(records), abs=1e-6)
    assert "spend cap" in summary["stopped"]


def test_reruns_under_the_same_cap_stay_under_it_together(
    foreign: SimulatorServer, tmp_path: Path
) -> None:
    """Earlier runs' spend is priced the same way: re-runs add up to the cap."""
    (tmp_path / "config.yaml").write_text("request:\n  max_tokens: 50\n")
    source = write_prompts(tmp_path / "j.jsonl", 200)
    capped = [str(source), "--max-cost", str(CAP), "--concurrency", "8"]
    results = tmp_path / "j.results.jsonl"
    # Each re-run may spend what the ones before left under the cap (rows cost
    # less than their bound), so it takes a few runs until one sends nothing;
    # after every one of them, the output's spend is within the cap.
    sent = -1
    for _ in range(30):
        if foreign.ledger.count() == sent:
            break
        sent = foreign.ledger.count()
        assert run(capped) == 75
        assert spent_by(records_of(results)) <= CAP
    assert foreign.ledger.count() == sent  # a re-run with nothing left sends nothing
    records = records_of(results)
    assert len(records) == sent < 200
    assert spent_by(records) <= CAP
    before = summary_of(results)["estimated_cost_before_usd"]
    assert before == pytest.approx(spent_by(records), abs=1e-6)


def test_cap_without_a_price_exits_2_before_sending(
    foreign: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deployment the price table does not know: exit 2, naming it and prices:."""
    source = write_prompts(tmp_path / "j.jsonl", 20)
    args = [str(source), "--deployment", "chat", "--max-cost", "1"]
    assert run([*args, "--log-format", "text"]) == 2
    assert foreign.ledger.count() == 0
    assert not (tmp_path / "j.results.jsonl").exists()
    err = capsys.readouterr().err
    assert "'chat'" in err
    assert "prices:" in err
    assert "Traceback" not in err


def test_cap_with_model_set_for_an_unknown_deployment_name(
    foreign: SimulatorServer, tmp_path: Path
) -> None:
    """model: prices a deployment whose name is no model's: the cap holds."""
    config = "model: gpt-4o-mini\nrequest:\n  max_tokens: 50\n"
    (tmp_path / "config.yaml").write_text(config)
    source = write_prompts(tmp_path / "j.jsonl", 200)
    args = [
        str(source),
        "--deployment",
        "chat",
        "--max-cost",
        str(CAP),
        "--concurrency",
        "2",
    ]
    assert run(args) == 75
    records = records_of(tmp_path / "j.results.jsonl")
    assert 0 < foreign.ledger.count() == len(records) < 200
    assert spent_by(records) <= CAP


def test_a_priced_dated_version_is_charged_its_own_price(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """An answer from a dated version of the model is priced by that version's entry."""
    prices = "prices:\n  gpt-4o-mini-2024-07-18: {input: 1000, output: 2000}\n"
    (tmp_path / "config.yaml").write_text(prices)
    source = write_prompts(tmp_path / "v.jsonl", 5)
    assert run([str(source)]) == 0
    records = records_of(tmp_path / "v.results.jsonl")
    assert {r["model"] for r in records} == {"gpt-4o-mini-2024-07-18"}
    expected = sum(
        (r["usage"]["prompt_tokens"] * 1000 + r["usage"]["completion_tokens"] * 2000)
        / 1e6
        for r in records
    )
    summary = summary_of(tmp_path / "v.results.jsonl")
    assert summary["estimated_cost_usd"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("answered", "named", "expected"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", True),
        ("gpt-4-0613", "gpt-4", True),
        ("gpt-4-1106-preview", "gpt-4", True),
        ("GPT-4o", "gpt-4o", True),
        ("gpt-4o-mini-2024-07-18", "gpt-4o", False),
        ("gpt-35-turbo-16k", "gpt-35-turbo", False),
        ("gpt-3.5-turbo", "gpt-4o-mini", False),
        ("gpt-4o", "", False),
    ],
)
def test_what_counts_as_a_version_of_a_model(
    answered: str, named: str, expected: bool
) -> None:
    """Only the named model itself or a dated version of it may refine the price."""
    assert is_version_of(answered, named) is expected


def test_another_model_never_changes_the_price() -> None:
    """An answer naming a cheaper or unknown model is priced as the settings name it."""
    settings = Settings(deployment="gpt-4o")
    gpt_4o = DEFAULT_PRICES["gpt-4o"]
    assert answer_price(settings, "gpt-4o-mini-2024-07-18") == gpt_4o
    assert answer_price(settings, REPORTED_MODEL) == gpt_4o
    assert answer_price(settings, None) == gpt_4o
    unnamed = Settings(deployment="prod-chat")
    assert answer_price(unnamed, "gpt-4o-2024-08-06") == gpt_4o
    assert answer_price(unnamed, REPORTED_MODEL) is None


def test_cap_without_max_tokens_says_it_may_be_passed(
    foreign: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No completion bound: the run warns that answers in flight may pass the cap."""
    source = write_prompts(tmp_path / "j.jsonl", 5)
    args = [str(source), "--max-cost", "1", "--log-format", "text"]
    assert run(args) == 0
    assert "set request.max_tokens for a cap that holds" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text("request:\n  max_tokens: 50\n")
    assert run([*args, "--fresh"]) == 0
    assert "a cap that holds" not in capsys.readouterr().err
