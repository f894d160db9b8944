"""Shared fixtures: a clean environment and the simulator on loopback."""

from __future__ import annotations

import inspect
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from batchrunner.simulator import SimConfig, SimulatorServer
from tests.azurite import connection_string, running_azurite

SECRET_KEY = "sk-test-0123456789abcdef-SECRET"
DEPLOYMENT = "gpt-4o-mini"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stops the run when a test function has no docstring, naming each one."""
    missing = sorted(
        {
            item.nodeid.split("[")[0]
            for item in items
            if isinstance(item, pytest.Function) and not inspect.getdoc(item.function)
        }
    )
    if missing:
        names = "\n  ".join(missing)
        msg = f"every test needs a one-sentence docstring; these have none:\n  {names}"
        raise pytest.UsageError(msg)


#: Variables that would point a test at a real Azure resource or change defaults.
_OUR_PREFIXES = (
    "AZURE_", "OPENAI_", "BATCHRUNNER_", "IDENTITY_", "MSI_", "JOB_COMPLETION_INDEX",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keeps every test away from real credentials and the repo's config.yaml."""
    for name in list(os.environ):
        if name.startswith(_OUR_PREFIXES):
            monkeypatch.delenv(name)
    # What runs remember between them (validation stamps) stays in the test.
    monkeypatch.setenv("BATCHRUNNER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """The Azure OpenAI simulator on 127.0.0.1, with a secret-looking key."""
    config = SimConfig(
        api_key=SECRET_KEY,
        deployments={
            DEPLOYMENT: "gpt-4o-mini-2024-07-18",
            "gpt-35-turbo-instruct": "gpt-35-turbo-instruct-0914",
            "text-embedding-3-small": "text-embedding-3-small",
        },
        retry_after_ms=50,
        slow_seconds=5.0,
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def azure_env(
    monkeypatch: pytest.MonkeyPatch, simulator: SimulatorServer
) -> SimulatorServer:
    """The environment a user sets for Azure, pointed at the simulator."""
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", simulator.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", DEPLOYMENT)
    return simulator


def child_env(simulator: SimulatorServer, **extra: str) -> dict[str, str]:
    """The environment for a batchrunner subprocess pointed at *simulator*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_PREFIXES)}
    env["BATCHRUNNER_STATE_DIR"] = os.environ["BATCHRUNNER_STATE_DIR"]
    env.update(
        AZURE_OPENAI_ENDPOINT=simulator.url,
        AZURE_OPENAI_API_KEY=SECRET_KEY,
        OPENAI_API_VERSION="2024-10-21",
        AZURE_OPENAI_DEPLOYMENT=DEPLOYMENT,
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        **extra,
    )
    return env


PYTHON = sys.executable


@pytest.fixture(scope="session")
def azurite_url() -> Iterator[str]:
    """The blob endpoint of Azurite on loopback, shared by the session."""
    with running_azurite() as url:
        yield url


@pytest.fixture
def container(
    clean_environ: None, azurite_url: str, monkeypatch: pytest.MonkeyPatch
) -> ContainerClient:
    """A new, empty container, with AZURE_STORAGE_CONNECTION_STRING pointing at it."""
    connection = connection_string(azurite_url)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    client = ContainerClient.from_connection_string(
        connection, "c" + uuid.uuid4().hex[:16]
    )
    client.create_container()
    return client
