"""
The project's simulator set to answer as Microsoft's own Azure OpenAI API
simulator did when batchrunner was run against it (issue 14): every answer
reports ``gpt-3.5-turbo`` whatever the deployment, a 404 has no ``code``, a
refused key is FastAPI's ``{"detail": …}``, and answers carry only the
``x-ratelimit-remaining-*`` headers (no limits).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchrunner.simulator import SimConfig, SimulatorServer
from tests.conftest import SECRET_KEY

#: What every answer of that simulator reports as its model.
REPORTED_MODEL = "gpt-3.5-turbo"
KEY_REFUSED = "Missing or incorrect API Key"
MISSING = "nope"
NOT_FOUND = f"Deployment {MISSING} not found"


def foreign_config() -> SimConfig:
    """A simulator configuration that answers the way Microsoft's did."""
    return SimConfig(
        api_key=SECRET_KEY,
        deployments={"gpt-4o-mini": REPORTED_MODEL, "chat": REPORTED_MODEL},
        key_denied_body={"detail": KEY_REFUSED},
        not_found_body={"error": NOT_FOUND},
        retry_after_ms=50,
        rate_headers="remaining",
    )


@contextlib.contextmanager
def foreign_simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorServer]:
    """That simulator on loopback, with the environment a user sets pointing at it."""
    with SimulatorServer(foreign_config()) as server:
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", SECRET_KEY)
        monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
        monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
        yield server


def write_prompts(path: Path, n: int) -> Path:
    """*n* JSONL rows with ids and short prompts."""
    rows = [{"id": f"r{i}", "prompt": f"Question number {i}?"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def records_of(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL results file (none when there is no file)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def summary_of(results: Path) -> dict[str, Any]:
    """The summary.json beside *results*."""
    summary = results.with_name(results.stem + ".summary.json")
    return dict(json.loads(summary.read_text("utf-8")))
