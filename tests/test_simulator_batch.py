"""The simulator's Files and Batches API, driven by the real SDK over loopback HTTP."""

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


def _fast() -> SimConfig:
    return SimConfig(batch_state_seconds=0.0, batch_lines_per_second=None)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(_fast()) as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    sdk = openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url,
        api_key="sim-key",
        api_version=API_VERSION,
        max_retries=0,
    )
    async with sdk:
        yield sdk


def _line(custom_id: str, text: str, model: str = CHAT, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": "/chat/completions"}
    return {**line, "body": body, **extra}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


async def _submit(
    client: openai.AsyncAzureOpenAI, data: bytes, **options: Any
) -> Batch:
    uploaded = await client.files.create(file=("input.jsonl", data), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id,
        endpoint=options.pop("endpoint", "/chat/completions"),
        completion_window=options.pop("completion_window", "24h"),
        **options,
    )


async def _ended(client: openai.AsyncAzureOpenAI, batch: Batch) -> Batch:
    """The batch once it has ended, polled through the API as a client would."""
    while batch.status not in ENDED:
        await asyncio.sleep(0.01)
        batch = await client.batches.retrieve(batch.id)
    return batch


async def _lines(client: openai.AsyncAzureOpenAI, file_id: str | None) -> list[Any]:
    assert file_id
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


async def test_batch_runs_to_completed_with_usage_and_unordered_output(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """A batch validates, runs and completes; each line is a full chat answer."""
    ids = [f"row-{i}" for i in range(40)]
    batch = await _submit(
        client,
        _jsonl([_line(i, f"question {i}") for i in ids]),
        metadata={"output": "results.jsonl"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"output": "results.jsonl"}
    done = await _ended(client, batch)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
    assert done.request_counts.failed == 0
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    output = await _lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(ids)
    assert [line["custom_id"] for line in output] != ids
    first = output[0]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["model"] == CHAT_MODEL
    usage = [line["response"]["body"]["usage"] for line in output]
    assert done.usage is not None
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in usage)
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usage)
    assert done.model == CHAT
    errors = await client.files.content(done.error_file_id or "")
    assert errors.content == b""
    assert sim.ledger.batch_line_counts() == dict.fromkeys(ids, 1)
