"""
Start-up: a command loads only what it uses, and --deadline counts from the
process's start. Asserted by what is imported and by injected start times,
never by timing; benchmarks/startup.py has the figures.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.conftest import PYTHON, child_env
from tests.test_cli import prompts, write_csv

#: Packages that cost start-up time and that not every command needs.
HEAVY = (
    "openai", "azure", "pandas", "pyarrow", "bpe_openai", "jinja2", "jsonschema",
    "rich", "aiohttp", "httpx2", "tenacity", "numpy",
)  # fmt: skip

#: Runs the command in a fresh interpreter, then prints the heavy packages loaded.
PROBE = """
import json, runpy, sys
sys.argv = ["batchrunner", *sys.argv[1:]]
try:
    runpy.run_module("batchrunner", run_name="__main__")
except SystemExit:
    pass
heavy = set(json.loads({heavy!r}))
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & heavy)))
"""


def loaded(args: list[str], env: dict[str, str], cwd: Path) -> list[str]:
    """The heavy packages a fresh ``python -m batchrunner *args*`` imported."""
    code = PROBE.format(heavy=json.dumps(HEAVY))
    done = subprocess.run(
        [PYTHON, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    names: list[str] = json.loads(done.stdout.splitlines()[-1])
    return names


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_none_of_the_sdks(
    simulator: SimulatorServer, tmp_path: Path, flag: str
) -> None:
    """--version and --help load no SDK, no data library, no tokenizer."""
    assert loaded([flag], child_env(simulator), tmp_path) == []


def test_a_dry_run_and_a_refused_run_load_no_sdk(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """Nothing that only sending needs loads for --dry-run or for a mistake."""
    write_csv(tmp_path / "job.csv", prompts(5))
    env = child_env(simulator)
    senders = {"openai", "azure", "aiohttp", "httpx2", "tenacity", "rich"}
    assert not senders & set(loaded(["job.csv", "--dry-run"], env, tmp_path))
    assert not senders & set(loaded(["job.csv", "-o", "job.txt"], env, tmp_path))
    assert simulator.ledger.count() == 0


def test_a_run_loads_only_what_sending_needs(
    simulator: SimulatorServer, tmp_path: Path
) -> None:
    """A JSON-logged run with a key sends with the SDK, and loads nothing else heavy."""
    write_csv(tmp_path / "job.csv", prompts(5))
    names = loaded(["job.csv", "--log-format", "json"], child_env(simulator), tmp_path)
    assert simulator.ledger.count() == 5
    assert {"openai", "aiohttp"} <= set(names)
    assert not {"pandas", "pyarrow", "rich", "jinja2", "jsonschema"} & set(names)
    assert "bpe_openai" not in names  # no --tpm, --max-cost: no exact counts


def test_the_deadline_counts_from_the_start_it_is_given(
    azure_env: SimulatorServer, tmp_path: Path
) -> None:
    """A start an hour back leaves nothing of --deadline 1h: exit 75 at once."""
    source = write_csv(tmp_path / "job.csv", prompts(20))
    args = [str(source), "--deadline", "1h", "--log-format", "json"]
    assert run(args, started=time.monotonic() - 3600) == 75
    summary = json.loads((tmp_path / "job.results.summary.json").read_text())
    assert "deadline" in summary["stopped"]
    assert summary["rows_ok"] < 20
    assert run(args) == 0  # counted from now, the hour is plenty


def test_the_process_start_comes_from_the_os(tmp_path: Path) -> None:
    """A child that imports the SDK first still counts from its own start."""
    code = (
        "import openai\n"
        "from batchrunner.config import clock\n"
        "print(clock.process_started(), clock._LOADED)\n"
    )
    before = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=True,
    )
    started, loaded_at = map(float, done.stdout.split())
    # /proc counts in clock ticks (1/100 s): the start may read a tick early.
    assert before - 0.02 <= started < loaded_at
