"""
The simulator's Files API, auth and paths, gates and ledger around the Batches
API, and its command line, driven by the real SDK over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import httpx2
import openai
import pytest

from batchrunner.simulator import STATS_PATH, Gate, SimulatorServer
from batchrunner.simulator.files import expiry
from batchrunner.simulator.server import _config, _parse_args
from batchrunner.simulator.service import page
from tests.batchsim import (
    API_VERSION,
    ENDED,
    GOOD,
    client,
    ended,
    jsonl,
    sim,
    submit,
)

__all__ = ["client", "sim"]  # fixtures


async def test_files_upload_retrieve_list_content_and_delete(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """Uploaded files are kept as sent, listed by purpose, and gone once deleted."""
    data = jsonl(GOOD)
    uploaded = await client.files.create(
        file=("rows.jsonl", data),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 1_209_600},
    )
    assert uploaded.id.startswith("file-")
    assert (uploaded.bytes, uploaded.filename, uploaded.status) == (
        len(data),
        "rows.jsonl",
        "processed",
    )
    assert uploaded.expires_at == uploaded.created_at + 1_209_600
    other = await client.files.create(
        file=("notes.jsonl", b"{}\n"), purpose="user_data"
    )
    assert (await client.files.retrieve(uploaded.id)).bytes == len(data)
    assert (await client.files.content(uploaded.id)).content == data
    listed = await client.files.list(purpose="batch")
    assert [f.id for f in listed.data] == [uploaded.id]
    everything = await client.files.list()
    assert [f.id for f in everything.data] == [other.id, uploaded.id]
    deleted = await client.files.delete(uploaded.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(uploaded.id)


async def test_upload_refuses_a_bad_purpose_expiry_or_size(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """An unknown purpose, an expiry out of 14-30 days or a too big file is a 400."""
    with pytest.raises(openai.BadRequestError):
        await client.files.create(file=("a.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        await client.files.create(
            file=("a.jsonl", b"{}"),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 60},
        )
    sim.config.batch_max_file_bytes = 10
    with pytest.raises(openai.BadRequestError):
        await client.files.create(file=("a.jsonl", b"x" * 11), purpose="batch")
    assert (await client.files.list()).data == []


async def test_files_and_batches_refuse_a_wrong_key(sim: SimulatorServer) -> None:
    """Files and Batches calls with a wrong key get Azure's 401, and nothing is kept."""
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_key="wrong", api_version=API_VERSION, max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.files.create(file=("a.jsonl", jsonl(GOOD)), purpose="batch")
        assert caught.value.code == "401"
        with pytest.raises(openai.AuthenticationError):
            await wrong.batches.list()
    refused = [
        e for e in sim.ledger.entries if e.operation.startswith(("files.", "batches."))
    ]
    assert [e.status for e in refused] == [401, 401]


async def test_files_need_an_api_version_on_the_azure_path(
    sim: SimulatorServer,
) -> None:
    """Without api-version the /openai/files path is refused as Azure does."""
    async with httpx2.AsyncClient() as http:
        answer = await http.get(
            f"{sim.url}/openai/files", headers={"api-key": "sim-key"}
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "MissingApiVersionParameter"


async def test_bearer_tokens_are_accepted_when_valid(sim: SimulatorServer) -> None:
    """An Entra ID token the validator accepts may list batches."""
    sim.config.bearer_validator = lambda token: token == "good-token"
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url,
        azure_ad_token="good-token",
        api_version=API_VERSION,
        max_retries=0,
    ) as sdk:
        assert (await sdk.batches.list()).data == []


async def test_the_v1_paths_serve_a_plain_openai_client(sim: SimulatorServer) -> None:
    """/openai/v1/files and /openai/v1/batches work without an api-version."""
    async with openai.AsyncOpenAI(
        base_url=f"{sim.url}/openai/v1/", api_key="sim-key", max_retries=0
    ) as sdk:
        uploaded = await sdk.files.create(
            file=("a.jsonl", jsonl(GOOD)), purpose="batch"
        )
        batch = await sdk.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        while batch.status not in ENDED:
            await asyncio.sleep(0.01)
            batch = await sdk.batches.retrieve(batch.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None and batch.request_counts.completed == 2


async def test_a_gate_before_upload_holds_it_until_released(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """A gate on files.create holds the upload before the file exists."""
    gate = Gate("files.create")
    sim.config.gates.append(gate)
    upload = asyncio.create_task(
        client.files.create(file=("a.jsonl", jsonl(GOOD)), purpose="batch")
    )
    assert await asyncio.to_thread(gate.held.wait, 30)
    assert (await client.files.list()).data == []
    gate.release()
    uploaded = await upload
    assert [f.id for f in (await client.files.list()).data] == [uploaded.id]


async def test_a_gate_after_create_holds_the_answer_of_a_batch_that_exists(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """A gate with after=True lets the n-th create take effect and holds its answer."""
    gate = Gate("batches.create", nth=2, after=True)
    sim.config.gates.append(gate)
    first = await submit(client, jsonl(GOOD))
    second = asyncio.create_task(submit(client, jsonl(GOOD), metadata={"n": "2"}))
    assert await asyncio.to_thread(gate.held.wait, 30)
    listed = (await client.batches.list()).data
    assert [b.metadata for b in listed] == [{"n": "2"}, None]
    created = [e for e in sim.ledger.entries if e.operation == "batches.create"]
    assert [e.status for e in created] == [200, 200]
    gate.release()
    assert (await second).id == listed[0].id
    assert first.id == listed[1].id


_CLIENT_SCRIPT = """
import asyncio, sys, openai
async def main():
    sdk = openai.AsyncAzureOpenAI(
        azure_endpoint=sys.argv[1], api_key="sim-key", api_version="2024-10-21"
    )
    line = b'{"custom_id":"a","method":"POST","url":"/chat/completions",' \\
        b'"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}\\n'
    uploaded = await sdk.files.create(file=("in.jsonl", line), purpose="batch")
    await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/chat/completions",
        completion_window="24h", metadata={"by": "killed client"},
    )
    print("created, never reached", flush=True)
asyncio.run(main())
"""


async def test_a_client_killed_while_its_create_is_held_leaves_a_listed_batch(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """kill -9 during a held create answer: the batch still runs and is listed."""
    gate = Gate("batches.create", after=True)
    sim.config.gates.append(gate)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT_SCRIPT, sim.url, stdout=subprocess.PIPE
    )
    try:
        assert await asyncio.to_thread(gate.held.wait, 30)
        child.send_signal(signal.SIGKILL)
        printed, _ = await child.communicate()
    finally:
        gate.release()
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == -signal.SIGKILL and printed == b""
    (batch,) = (await client.batches.list()).data
    assert batch.metadata == {"by": "killed client"}
    assert (await ended(client, batch)).status == "completed"
    assert sim.ledger.batch_line_counts() == {"a": 1}


def test_a_gate_names_a_known_call() -> None:
    """A gate on a call the API does not have is refused when it is made."""
    with pytest.raises(ValueError, match=r"batches\.create"):
        Gate("batches.make")
    with pytest.raises(ValueError, match="from 1"):
        Gate("files.create", nth=0)


async def test_the_ledger_records_each_call_and_the_stats_count_lines(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Files and Batches calls are in the ledger; the stats count batch lines."""
    batch = await submit(client, jsonl(GOOD), metadata={"output": "out.jsonl"})
    done = await ended(client, batch)
    calls = [e.operation for e in sim.ledger.entries]
    assert calls[:2] == ["files.create", "batches.create"]
    created = sim.ledger.entries[1].body
    assert created is not None and created["metadata"] == {"output": "out.jsonl"}
    assert set(calls[2:]) == {"batches.retrieve"}
    async with httpx2.AsyncClient() as http:
        stats = (await http.get(sim.url + STATS_PATH)).json()
    assert (stats["batch_lines"], stats["batch_lines_repeated"]) == (2, 0)
    assert stats["batches"] == {"completed": 1}
    assert sim.ledger.batch_statuses == {done.id: "completed"}


def test_list_pages_follow_the_after_cursor() -> None:
    """page() starts after the named id and says whether more follow."""
    items = [{"id": f"x{i}"} for i in range(5)]
    first = page(items, None, 2)
    assert [i["id"] for i in first["data"]] == ["x0", "x1"] and first["has_more"]
    last = page(items, "x2", 10)
    assert [i["id"] for i in last["data"]] == ["x3", "x4"] and not last["has_more"]
    assert page(items, "gone", 2)["data"] == []


def test_the_command_line_sets_the_batch_knobs() -> None:
    """python -m batchrunner.simulator's batch flags reach SimConfig."""
    args = _parse_args(
        [
            "--batch-lines-per-second", "0", "--batch-state-seconds", "0.5",
            "--batch-enqueued-tokens", "5000", "--batch-deployment", "gpt-4o-mini",
            "--batch-expire", "2=10", "--batch-fail", "3",
        ]
    )  # fmt: skip
    config = _config(args)
    assert config.batch_lines_per_second is None
    assert config.batch_state_seconds == 0.5
    assert config.batch_enqueued_tokens == 5000
    assert config.batch_deployments == {"gpt-4o-mini"}
    assert (config.batch_expire_after, config.batch_fail) == ({2: 10}, {3})


async def test_batch_files_are_limited_in_number_unless_they_expire(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Past the limit of kept batch files an upload is a 400; one with expiry fits."""
    sim.config.batch_max_files = (2, 3)
    for _ in range(2):
        await client.files.create(file=("a.jsonl", jsonl(GOOD)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(file=("a.jsonl", jsonl(GOOD)), purpose="batch")
    assert "expires_after" in caught.value.message
    expiring = await client.files.create(
        file=("a.jsonl", jsonl(GOOD)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 2_592_000},
    )
    assert expiring.expires_at is not None
    assert len((await client.files.list(purpose="batch")).data) == 3


def test_expiry_takes_14_to_30_days_from_creation() -> None:
    """expiry() gives the seconds asked for, or says what is wrong with them."""
    assert expiry(None, None, "expires_after") is None
    assert expiry("created_at", "1209600", "expires_after") == 1_209_600
    assert expiry("created_at", 2_592_000, "expires_after") == 2_592_000
    assert (
        expiry("created_at", 2_592_001, "x")
        == "x[seconds] must be an integer from 1209600 to 2592000."
    )
    assert expiry("last_active_at", 1_209_600, "x") == "x[anchor] must be 'created_at'."
