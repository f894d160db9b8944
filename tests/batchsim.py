"""Helpers for the tests of the simulator's Files and Batches API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from openai.types import Batch

from batchrunner.simulator import SimConfig, SimulatorServer

API_VERSION = "2024-10-21"
CHAT = "gpt-4o-mini"
CHAT_MODEL = "gpt-4o-mini-2024-07-18"
ENDED = ("completed", "failed", "expired", "cancelled")


def fast_config() -> SimConfig:
    """A simulator whose batches run as fast as they can, with no state waits."""
    return SimConfig(batch_state_seconds=0.0, batch_lines_per_second=None)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """A fast simulator on loopback."""
    with SimulatorServer(fast_config()) as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    """The real SDK pointed at *sim*, without its own retries."""
    sdk = openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url,
        api_key="sim-key",
        api_version=API_VERSION,
        max_retries=0,
    )
    async with sdk:
        yield sdk


def line(custom_id: str, text: str, model: str = CHAT, **extra: Any) -> dict[str, Any]:
    """A chat request line of a batch input file."""
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/chat/completions"}
    return {**line, "body": body, **extra}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    """*lines* as a JSONL file."""
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def submit(client: openai.AsyncAzureOpenAI, data: bytes, **options: Any) -> Batch:
    """Upload *data* and create a batch of it, as a client does."""
    uploaded = await client.files.create(file=("input.jsonl", data), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=options.pop("endpoint", "/chat/completions"),
        completion_window=options.pop("completion_window", "24h"),
        **options,
    )


async def ended(client: openai.AsyncAzureOpenAI, batch: Batch) -> Batch:
    """The batch once it has ended, polled through the API as a client would."""
    while batch.status not in ENDED:
        await asyncio.sleep(0.01)
        batch = await client.batches.retrieve(batch.id)
    return batch


async def lines_of(client: openai.AsyncAzureOpenAI, file_id: str | None) -> list[Any]:
    """The JSON lines of a stored file."""
    assert file_id
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


GOOD = [line("a", "one"), line("b", "two")]
