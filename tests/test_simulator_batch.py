"""The simulator's Files and Batches API, driven by the real SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import openai
import pytest
from openai.types import Batch

from batchrunner.simulator import STATS_PATH, Gate, SimConfig, SimulatorServer
from batchrunner.simulator.server import _config, _parse_args
from batchrunner.simulator.service import page

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


async def test_failed_lines_go_to_the_error_file_with_the_online_error_bodies(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Filtered, faulty and over-long lines land in the error file as online errors."""
    long_prompt = "word " * 200
    lines = [
        _line("ok", "a fine question"),
        _line("blocked", "please BLOCKME now"),
        _line("faulty", "[[sim:500]] hello"),
        _line("long", long_prompt),
        _line("redacted", "REDACTME please"),
    ]
    lines[3]["body"]["max_tokens"] = 127_990
    done = await _ended(client, await _submit(client, _jsonl(lines)))
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)
    errors = {
        line["custom_id"]: line for line in await _lines(client, done.error_file_id)
    }
    assert sorted(errors) == ["blocked", "faulty", "long"]
    blocked = errors["blocked"]["response"]
    assert blocked["status_code"] == 400
    assert blocked["body"]["error"]["code"] == "content_filter"
    assert (
        blocked["body"]["error"]["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    )
    assert errors["faulty"]["response"]["status_code"] == 500
    assert errors["faulty"]["response"]["body"]["error"]["type"] == "server_error"
    long = errors["long"]["response"]
    assert long["status_code"] == 400
    assert long["body"]["error"]["code"] == "context_length_exceeded"
    assert all(line["error"] is None for line in errors.values())
    output = {
        line["custom_id"]: line for line in await _lines(client, done.output_file_id)
    }
    choice = output["redacted"]["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert set(sim.ledger.batch_line_counts()) == {line["custom_id"] for line in lines}


def _bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


_GOOD = [_line("a", "one"), _line("b", "two")]

#: (what is wrong, the input file, the error code, the line it names)
_INVALID_INPUTS = [
    ("a line is not JSON", _jsonl(_GOOD) + b"{not json\n", "invalid_json_line", 3),
    (
        "a line has no custom_id",
        _jsonl([*_GOOD, {"method": "POST", "url": "/chat/completions", "body": {}}]),
        "invalid_json_line",
        3,
    ),
    (
        "two lines share a custom_id",
        _jsonl([*_GOOD, _line("a", "three")]),
        "duplicate_custom_id",
        3,
    ),
    (
        "two deployments in one file",
        _jsonl([*_GOOD, _line("c", "three", model="gpt-35-turbo-instruct")]),
        "model_mismatch",
        3,
    ),
    (
        "a deployment that does not exist",
        _jsonl([_line("a", "one", model="nope")]),
        "model_not_found",
        1,
    ),
    (
        "a line's url differs from the endpoint",
        _jsonl([*_GOOD, {**_line("c", "three"), "url": "/completions"}]),
        "url_mismatch",
        3,
    ),
    ("an empty file", b"\n", "empty_file", None),
    (
        "a line that is not UTF-8",
        _jsonl(_GOOD) + json.dumps(_line("c", "three")).encode("utf-16-le") + b"\n",
        "invalid_json_line",
        3,
    ),
    ("a byte order mark", _bom(_jsonl(_GOOD)), "model_not_found", 1),
]


@pytest.mark.parametrize(
    ("data", "code", "line"),
    [case[1:] for case in _INVALID_INPUTS],
    ids=[case[0] for case in _INVALID_INPUTS],
)
async def test_invalid_input_fails_the_batch_with_azures_error(
    client: openai.AsyncAzureOpenAI,
    sim: SimulatorServer,
    data: bytes,
    code: str,
    line: int | None,
) -> None:
    """An input file Azure would refuse fails its batch, naming the code and line."""
    done = await _ended(client, await _submit(client, data))
    assert done.status == "failed"
    assert done.failed_at is not None
    assert done.errors is not None and done.errors.data
    first = done.errors.data[0]
    assert (first.code, first.line) == (code, line)
    assert first.message
    assert done.output_file_id is None and done.error_file_id is None
    assert sim.ledger.batch_line_counts() == {}


async def test_a_file_over_the_request_limit_fails_with_too_many_tasks(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """More requests than a batch may hold fail it with too_many_tasks."""
    sim.config.batch_max_requests = 3
    data = _jsonl([_line(f"r{i}", "q") for i in range(4)])
    done = await _ended(client, await _submit(client, data))
    assert done.status == "failed"
    assert done.errors and done.errors.data
    assert done.errors.data[0].code == "too_many_tasks"


async def test_a_deployment_that_is_not_global_batch_fails_the_batch(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Only the deployments SimConfig names as Global-Batch may run batches."""
    sim.config.batch_deployments = {"gpt-35-turbo-instruct"}
    done = await _ended(client, await _submit(client, _jsonl(_GOOD)))
    assert done.status == "failed"
    assert done.errors and done.errors.data
    assert done.errors.data[0].code == "invalid_request"
    assert "Global-Batch" in (done.errors.data[0].message or "")


async def test_every_bad_line_is_listed_with_its_line_number(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """A failed batch lists each bad line, so a client can map them to rows."""
    data = _jsonl([_GOOD[0], _line("a", "x"), _line("b", "y"), _line("a", "z")])
    done = await _ended(client, await _submit(client, data))
    assert done.errors and done.errors.data
    found = [(e.code, e.line) for e in done.errors.data]
    assert found == [("duplicate_custom_id", 2), ("duplicate_custom_id", 4)]


@pytest.mark.parametrize(
    ("option", "value", "param"),
    [
        ("completion_window", "48h", "completion_window"),
        ("endpoint", "/embeddings", "endpoint"),
        ("metadata", {f"k{i}": "v" for i in range(17)}, "metadata"),
    ],
)
async def test_create_refuses_what_azure_refuses_at_once(
    client: openai.AsyncAzureOpenAI, option: str, value: Any, param: str
) -> None:
    """A create with an unsupported window, endpoint or metadata is a 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _submit(client, _jsonl(_GOOD), **{option: value})
    assert caught.value.param == param


async def test_create_refuses_an_unknown_input_file(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """A batch of a file the service does not have is a 400 on input_file_id."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.batches.create(
            input_file_id="file-missing",
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    assert caught.value.param == "input_file_id"


async def test_enqueued_token_quota_refuses_a_create_with_token_limit_exceeded(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Over the enqueued-token quota a create is a 400 naming token_limit_exceeded."""
    data = _jsonl(
        [
            {
                **_line(f"r{i}", "q"),
                "body": {**_line(f"r{i}", "q")["body"], "max_tokens": 100},
            }
            for i in range(2)
        ]
    )
    sim.config.batch_lines_per_second = 0.001  # the first batch stays running
    sim.config.batch_enqueued_tokens = 300
    first = await _submit(client, data)
    with pytest.raises(openai.BadRequestError) as caught:
        await _submit(client, data)
    assert "token_limit_exceeded" in str(caught.value)
    await client.batches.cancel(first.id)
    assert (await _ended(client, first)).status == "cancelled"
    again = await _submit(client, data)
    assert again.status == "validating"


async def test_a_batch_past_its_knob_expires_keeping_the_finished_lines(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """The n-th batch expires after so many lines; those are in its output file."""
    sim.config.batch_expire_after = {2: 3}
    ids = [f"r{i}" for i in range(10)]
    data = _jsonl([_line(i, "q") for i in ids])
    assert (await _ended(client, await _submit(client, data))).status == "completed"
    sim.ledger.reset()
    done = await _ended(client, await _submit(client, data))
    assert done.status == "expired"
    assert done.expired_at is not None and done.completed_at is None
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (10, 3)
    output = await _lines(client, done.output_file_id)
    finished = {line["custom_id"] for line in output}
    assert len(finished) == 3 and finished <= set(ids)
    assert sim.ledger.batch_line_counts() == dict.fromkeys(finished, 1)
    assert (await client.files.content(done.error_file_id or "")).content == b""


async def test_a_batch_can_be_made_to_fail(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """SimConfig.batch_fail fails the n-th batch before it answers a line."""
    sim.config.batch_fail = {1}
    done = await _ended(client, await _submit(client, _jsonl(_GOOD)))
    assert done.status == "failed"
    assert done.errors and done.errors.data
    assert sim.ledger.batch_line_counts() == {}


async def test_counts_advance_line_by_line_at_the_pace(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """request_counts show the lines done so far while the batch is in progress."""
    sim.config.batch_lines_per_second = 0.001  # one line now, the next much later
    batch = await _submit(client, _jsonl(_GOOD))
    while batch.request_counts is None or batch.request_counts.completed < 1:
        await asyncio.sleep(0.01)
        batch = await client.batches.retrieve(batch.id)
    assert batch.status == "in_progress"
    assert (batch.request_counts.total, batch.request_counts.completed) == (2, 1)
    await client.batches.cancel(batch.id)


async def test_cancel_ends_a_running_batch_with_what_it_finished(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """A cancel goes through cancelling to cancelled; finished lines are kept."""
    sim.config.batch_lines_per_second = 0.001  # one line now, the next much later
    sim.config.batch_state_seconds = 0.05
    batch = await _submit(client, _jsonl(_GOOD))
    await asyncio.to_thread(sim.ledger.wait_for_lines, 1)
    cancelling = await client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    statuses = await asyncio.to_thread(
        sim.ledger.wait_for_batches, lambda s: s[batch.id] == "cancelled"
    )
    assert list(statuses.values()) == ["cancelled"]
    done = await client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    output = await _lines(client, done.output_file_id)
    assert len(output) == 1 and output[0]["custom_id"] in ("a", "b")
    with pytest.raises(openai.BadRequestError):
        await client.batches.cancel(batch.id)


async def test_batches_list_newest_first_in_pages(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """GET /batches pages newest first with first_id, last_id and has_more."""
    created = [
        await _submit(client, _jsonl(_GOOD), metadata={"n": str(i)}) for i in range(5)
    ]
    newest_first = [b.id for b in reversed(created)]
    page = await client.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True
    extra = page.model_extra or {}
    assert (extra["first_id"], extra["last_id"]) == (newest_first[0], newest_first[1])
    every = [b.id async for b in client.batches.list(limit=2)]
    assert every == newest_first
    rest = await client.batches.list(after=newest_first[3])
    assert [b.id for b in rest.data] == newest_first[4:]
    assert rest.has_more is False


async def test_files_upload_retrieve_list_content_and_delete(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """Uploaded files are kept as sent, listed by purpose, and gone once deleted."""
    data = _jsonl(_GOOD)
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
            await wrong.files.create(file=("a.jsonl", _jsonl(_GOOD)), purpose="batch")
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
            file=("a.jsonl", _jsonl(_GOOD)), purpose="batch"
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
        client.files.create(file=("a.jsonl", _jsonl(_GOOD)), purpose="batch")
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
    first = await _submit(client, _jsonl(_GOOD))
    second = asyncio.create_task(_submit(client, _jsonl(_GOOD), metadata={"n": "2"}))
    assert await asyncio.to_thread(gate.held.wait, 30)
    listed = (await client.batches.list()).data
    assert [b.metadata for b in listed] == [{"n": "2"}, None]
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
    assert (await _ended(client, batch)).status == "completed"
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
    batch = await _submit(client, _jsonl(_GOOD), metadata={"output": "out.jsonl"})
    done = await _ended(client, batch)
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


@pytest.mark.parametrize(
    ("end", "code"), [("expired", "batch_expired"), ("cancelled", "batch_cancelled")]
)
async def test_unanswered_lines_can_be_listed_in_the_error_file(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer, end: str, code: str
) -> None:
    """With the OpenAI knob, a batch's unanswered lines get batch_expired/cancelled."""
    sim.config.batch_unfinished_in_error_file = True
    if end == "expired":
        sim.config.batch_expire_after = {1: 2}
    else:
        sim.config.batch_lines_per_second = 0.001  # line 2 is not due for 1000 s
    ids = {f"r{i}" for i in range(6)}
    batch = await _submit(client, _jsonl([_line(i, "q") for i in sorted(ids)]))
    if end == "cancelled":
        while batch.request_counts is None or batch.request_counts.completed < 1:
            await asyncio.sleep(0.01)
            batch = await client.batches.retrieve(batch.id)
        await client.batches.cancel(batch.id)
    done = await _ended(client, batch)
    assert done.status == end
    answered = {line["custom_id"] for line in await _lines(client, done.output_file_id)}
    unanswered = await _lines(client, done.error_file_id)
    assert {line["custom_id"] for line in unanswered} == ids - answered
    assert {line["error"]["code"] for line in unanswered} == {code}
    assert all(line["response"] is None for line in unanswered)
    assert set(sim.ledger.batch_line_counts()) == answered


async def test_output_files_keep_the_expiry_the_batch_asked_for(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """output_expires_after dates the output and error files; a bad one is a 400."""
    keep = {"anchor": "created_at", "seconds": 1_209_600}
    batch = await _submit(client, _jsonl(_GOOD), output_expires_after=keep)
    done = await _ended(client, batch)
    for file_id in (done.output_file_id, done.error_file_id):
        stored = await client.files.retrieve(file_id or "")
        assert stored.purpose == "batch_output"
        assert stored.expires_at == stored.created_at + 1_209_600
    with pytest.raises(openai.BadRequestError) as caught:
        await _submit(
            client,
            _jsonl(_GOOD),
            output_expires_after={"anchor": "created_at", "seconds": 5},
        )
    assert caught.value.param == "output_expires_after"


async def test_batch_files_are_limited_in_number_unless_they_expire(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Past the limit of kept batch files an upload is a 400; one with expiry fits."""
    sim.config.batch_max_files = (2, 3)
    for _ in range(2):
        await client.files.create(file=("a.jsonl", _jsonl(_GOOD)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(file=("a.jsonl", _jsonl(_GOOD)), purpose="batch")
    assert "expires_after" in caught.value.message
    expiring = await client.files.create(
        file=("a.jsonl", _jsonl(_GOOD)),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 2_592_000},
    )
    assert expiring.expires_at is not None
    assert len((await client.files.list(purpose="batch")).data) == 3
