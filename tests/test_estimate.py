"""
--dry-run: figures checked against a case worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.prepare.estimate import duration_text, money
from batchrunner.simulator import SimulatorServer
from tests.test_cli import write_jsonl

# cl100k_base (gpt-4), as tiktoken gives them: "user" is [882], "hello world" is
# [15339, 1917], "tiktoken is great!" is [83, 1609, 5963, 374, 2294, 0]. A chat
# prompt is 3 (reply priming) + per message 3 + role + content (OpenAI cookbook).
HELLO_TOKENS = 3 + 3 + 1 + 2  # 9
TIKTOKEN_TOKENS = 3 + 3 + 1 + 6  # 13

CONFIG = """\
model: gpt-4
request:
  max_tokens: 50
  n: 2
prices:
  gpt-4: {input: 10, output: 20}
"""


def _events(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines()]


def test_dry_run_matches_a_hand_computed_case(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens, completion bound, cost and time equal the figures worked out by hand."""
    (tmp_path / "config.yaml").write_text(CONFIG)
    rows = [
        {"id": "a", "prompt": "hello world"},
        {"id": "b", "prompt": "tiktoken is great!"},
        {"id": "c", "prompt": "hello world"},  # the same request as a: sent once
    ]
    source = write_jsonl(tmp_path / "d.jsonl", rows)
    assert run([str(source), "--dry-run", "--tpm", "600", "--rpm", "6"]) == 0
    out, err = capsys.readouterr()
    prompt = HELLO_TOKENS + TIKTOKEN_TOKENS  # 22
    completion = 2 * 50 * 2  # two requests, max_tokens 50 × n 2: 200
    cost = (prompt * 10 + completion * 20) / 1e6  # $0.00422
    seconds = max((prompt + completion) / 600 * 60, 2 / 6 * 60)  # 22.2 s vs 20 s
    assert "rows to send     3" in out
    assert "identical rows   1" in out
    assert "requests         2" in out
    assert "prompt tokens    22 (exact, cl100k_base)" in out
    assert "completion bound 200 (100 a request: max_tokens × n)" in out
    assert "quota charge     222 tokens" in out
    assert "gpt-4: $10 in, $20 out per 1M tokens (file " in out
    assert "expected cost    ≤ $0.004220" in out
    assert "expected time    ≥ 22.2 s under --tpm 600 and --rpm 6" in out
    (event,) = [e for e in _events(err) if e["event"] == "estimate"]
    assert event["prompt_tokens"] == prompt
    assert event["completion_tokens"] == completion
    assert event["cost"] == pytest.approx(cost)
    assert event["seconds"] == pytest.approx(seconds)
    assert azure_env.ledger.count() == 0
    assert not (tmp_path / "d.results.jsonl").exists()


def test_dry_run_without_max_tokens_says_unbounded(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no max_tokens, the cost is a lower bound and the answers unbounded."""
    source = write_jsonl(tmp_path / "u.jsonl", [{"prompt": "hello world"}])
    assert run([str(source), "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert "completion bound unbounded: set request.max_tokens" in out
    assert "expected cost    ≥ $" in out
    assert "no --tpm/--rpm given" in out


def test_dry_run_leaves_out_cached_rows(
    azure_env: SimulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows whose answers are in --cache are neither sent nor counted."""
    source = write_jsonl(
        tmp_path / "c.jsonl", [{"id": str(i), "prompt": f"q {i}"} for i in range(3)]
    )
    cache = str(tmp_path / "cache")
    assert run([str(source), "--cache", cache, "-o", str(tmp_path / "1.jsonl")]) == 0
    capsys.readouterr()
    assert run([str(source), "--cache", cache, "--dry-run"]) == 0
    out, _ = capsys.readouterr()
    assert "from the cache   3 rows" in out
    assert "requests         0" in out
    assert azure_env.ledger.count() == 3


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(42, "42.0 s"), (725, "12 min 5 s"), (12_000, "3 h 20 min")],
)
def test_duration_text(seconds: float, text: str) -> None:
    """Durations read in the unit that suits them."""
    assert duration_text(seconds) == text


@pytest.mark.parametrize(
    ("dollars", "text"),
    [(1234.5, "$1,234.50"), (0.0421, "$0.0421"), (4e-5, "$0.000040")],
)
def test_money(dollars: float, text: str) -> None:
    """Small sums keep their significant digits."""
    assert money(dollars) == text
