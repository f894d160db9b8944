"""
Pay once: identical requests within a run, and --cache across runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchrunner.cli import run
from batchrunner.prepare import identity
from batchrunner.records import Api, Request
from batchrunner.simulator import SimulatorServer
from tests.test_cli import read_jsonl, write_jsonl


def _repeated(copies: int, distinct: int) -> list[dict[str, Any]]:
    """*copies* rows of each of *distinct* prompts, interleaved."""
    return [
        {"id": f"r{c}-{d}", "prompt": f"Question {d}?"}
        for c in range(copies)
        for d in range(distinct)
    ]


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_identical_requests_are_sent_once(
    azure_env: SimulatorServer, tmp_path: Path, concurrency: str
) -> None:
    """Repeats, in flight together or one after another, share one answer."""
    azure_env.config.latency = 0.02
    source = write_jsonl(tmp_path / "d.jsonl", _repeated(3, 4))
    assert run([str(source), "--concurrency", concurrency]) == 0
    assert azure_env.ledger.count() == 4
    records = read_jsonl(tmp_path / "d.results.jsonl")
    assert len(records) == 12
    assert all(r["status"] == "ok" for r in records)
    shared = [r for r in records if r.get("reused") == "duplicate"]
    assert len(shared) == 8
    assert all(r["attempts"] == 0 and r["latency_ms"] is None for r in shared)
    by_prompt: dict[str, set[str]] = {}
    for r in records:
        by_prompt.setdefault(r["id"].split("-")[1], set()).add(r["output"])
    assert all(len(outputs) == 1 for outputs in by_prompt.values())
    summary = json.loads((tmp_path / "d.results.summary.json").read_text())
    assert summary["requests"] == 4
    assert summary["rows_shared"] == 8
    assert summary["rows_ok"] == 12


def test_no_dedupe_sends_every_row(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """--no-dedupe sends identical rows each on their own."""
    source = write_jsonl(tmp_path / "d.jsonl", _repeated(3, 2))
    assert run([str(source), "--no-dedupe"]) == 0
    assert azure_env.ledger.count() == 6


def test_a_failed_request_leaves_its_twin_to_try(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """Only answers are shared: when the first of two twins fails, the other sends."""
    rows = [
        {"id": "a", "prompt": "x [[sim:500]]"},
        {"id": "b", "prompt": "x [[sim:500]]"},
    ]
    source = write_jsonl(tmp_path / "t.jsonl", rows)
    assert run([str(source), "--max-attempts", "1", "--concurrency", "2"]) == 1
    statuses = sorted(r["status"] for r in read_jsonl(tmp_path / "t.results.jsonl"))
    assert statuses == ["error", "ok"]
    assert [e.status for e in azure_env.ledger.entries] == [500, 200]


def test_cache_pays_only_for_changed_rows(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """After a prompt tweak, a re-run with --cache sends only the changed rows."""
    cache = str(tmp_path / "answers")
    rows = [{"id": str(i), "prompt": f"Summarise item {i}."} for i in range(5)]
    source = write_jsonl(tmp_path / "c.jsonl", rows)
    assert run([str(source), "--cache", cache]) == 0
    assert azure_env.ledger.count() == 5
    first = {r["id"]: r for r in read_jsonl(tmp_path / "c.results.jsonl")}

    rows[1]["prompt"] = "Summarise item 1 in one line."
    rows[3]["prompt"] = "Summarise item 3 in one line."
    write_jsonl(source, rows)
    assert run([str(source), "--cache", cache, "--fresh"]) == 0
    assert azure_env.ledger.count() == 5 + 2
    changed = [e.prompt for e in azure_env.ledger.entries[5:]]
    assert sorted(changed) == [rows[1]["prompt"], rows[3]["prompt"]]
    second = {r["id"]: r for r in read_jsonl(tmp_path / "c.results.jsonl")}
    for row_id in ("0", "2", "4"):
        assert second[row_id]["reused"] == "cache"
        assert second[row_id]["attempts"] == 0
        assert second[row_id]["output"] == first[row_id]["output"]
        assert second[row_id]["request_id"] == first[row_id]["request_id"]
    assert "reused" not in second["1"]
    summary = json.loads((tmp_path / "c.results.summary.json").read_text())
    assert summary["rows_cached"] == 3
    assert summary["requests"] == 2


def test_cache_is_per_deployment(azure_env: SimulatorServer, tmp_path: Path) -> None:
    """The same request to another deployment is not answered from the cache."""
    cache = str(tmp_path / "answers")
    source = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Same words"}])
    assert run([str(source), "--cache", cache]) == 0
    other = ["--deployment", "gpt-35-turbo-instruct", "--api", "completions"]
    assert run([str(source), "--cache", cache, "--fresh", *other]) == 0
    assert azure_env.ledger.count() == 2
    assert sorted(p.name for p in (tmp_path / "answers").iterdir()) == [
        "gpt-35-turbo-instruct",
        "gpt-4o-mini",
    ]


def test_schema_errors_are_not_cached(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """An answer that failed the schema is asked for again on the next run."""
    (tmp_path / "s.json").write_text(
        '{"type": "object", "additionalProperties": false, "required": ["a"],'
        ' "properties": {"a": {"type": "string"}}}'
    )
    cache = str(tmp_path / "answers")
    source = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "BADSCHEMA please"}])
    for _ in range(2):
        assert run([str(source), "--cache", cache, "--schema", "s.json"]) == 1
    assert azure_env.ledger.count() == 2


def test_requests_differing_in_any_message_are_not_shared(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """The same prompt under another system message is another request."""
    rows = [
        {"id": "a", "prompt": "Same?", "system": "Be brief."},
        {"id": "b", "prompt": "Same?", "system": "Be thorough."},
        {"id": "c", "prompt": "Same?", "system": "Be brief."},
    ]
    source = write_jsonl(tmp_path / "s.jsonl", rows)
    assert run([str(source)]) == 0
    assert azure_env.ledger.count() == 2
    reused = {
        r["id"]: r.get("reused") for r in read_jsonl(tmp_path / "s.results.jsonl")
    }
    assert reused == {"a": None, "b": None, "c": "duplicate"}


@pytest.mark.parametrize("sort_from", [1_000, 5])
def test_repeat_counter_finds_the_repeats(
    monkeypatch: pytest.MonkeyPatch, sort_from: int
) -> None:
    """Counting and sorting find the same repeated requests."""
    monkeypatch.setattr(identity, "_SORT_FROM", sort_from)
    counter = identity.RepeatCounter()
    texts = ["a", "b", "a", "c", "a", "b", "d"]
    for number, text in enumerate(texts):
        body = {"messages": [{"role": "user", "content": text}], "temperature": 0}
        counter.add(Request(str(number), Api.CHAT, body, 0, 0))
    repeats = counter.repeats()
    assert sorted(repeats.values()) == [2, 3]
    again = Request(
        "x", Api.CHAT, {"messages": [{"role": "user", "content": "a"}]}, 0, 0
    )
    assert repeats[identity.stable_hash(identity.run_key(again))] == 3
