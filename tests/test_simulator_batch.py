"""The simulator's Batches API, driven by the real SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from batchrunner.simulator import SimulatorServer
from tests.batchsim import (
    CHAT,
    CHAT_MODEL,
    GOOD,
    client,
    ended,
    jsonl,
    line,
    lines_of,
    sim,
    submit,
)

__all__ = ["client", "sim"]  # fixtures


async def test_batch_runs_to_completed_with_usage_and_unordered_output(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """A batch validates, runs and completes; each line is a full chat answer."""
    ids = [f"row-{i}" for i in range(40)]
    batch = await submit(
        client,
        jsonl([line(i, f"question {i}") for i in ids]),
        metadata={"output": "results.jsonl"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"output": "results.jsonl"}
    done = await ended(client, batch)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
    assert done.request_counts.failed == 0
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    output = await lines_of(client, done.output_file_id)
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
        line("ok", "a fine question"),
        line("blocked", "please BLOCKME now"),
        line("faulty", "[[sim:500]] hello"),
        line("long", long_prompt),
        line("redacted", "REDACTME please"),
    ]
    lines[3]["body"]["max_tokens"] = 127_990
    done = await ended(client, await submit(client, jsonl(lines)))
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)
    errors = {
        line["custom_id"]: line for line in await lines_of(client, done.error_file_id)
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
        line["custom_id"]: line for line in await lines_of(client, done.output_file_id)
    }
    choice = output["redacted"]["response"]["body"]["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert set(sim.ledger.batch_line_counts()) == {line["custom_id"] for line in lines}


def _bom(data: bytes) -> bytes:
    return b"\xef\xbb\xbf" + data


#: (what is wrong, the input file, the error code, the line it names)
_INVALID_INPUTS = [
    ("a line is not JSON", jsonl(GOOD) + b"{not json\n", "invalid_json_line", 3),
    (
        "a line has no custom_id",
        jsonl([*GOOD, {"method": "POST", "url": "/chat/completions", "body": {}}]),
        "invalid_json_line",
        3,
    ),
    (
        "two lines share a custom_id",
        jsonl([*GOOD, line("a", "three")]),
        "duplicate_custom_id",
        3,
    ),
    (
        "two deployments in one file",
        jsonl([*GOOD, line("c", "three", model="gpt-35-turbo-instruct")]),
        "model_mismatch",
        3,
    ),
    (
        "a deployment that does not exist",
        jsonl([line("a", "one", model="nope")]),
        "model_not_found",
        1,
    ),
    (
        "a line's url differs from the endpoint",
        jsonl([*GOOD, {**line("c", "three"), "url": "/completions"}]),
        "url_mismatch",
        3,
    ),
    ("an empty file", b"\n", "empty_file", None),
    (
        "a line that is not UTF-8",
        jsonl(GOOD) + json.dumps(line("c", "three")).encode("utf-16-le") + b"\n",
        "invalid_json_line",
        3,
    ),
    ("a byte order mark", _bom(jsonl(GOOD)), "model_not_found", 1),
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
    done = await ended(client, await submit(client, data))
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
    data = jsonl([line(f"r{i}", "q") for i in range(4)])
    done = await ended(client, await submit(client, data))
    assert done.status == "failed"
    assert done.errors and done.errors.data
    assert done.errors.data[0].code == "too_many_tasks"


async def test_a_deployment_that_is_not_global_batch_fails_the_batch(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """Only the deployments SimConfig names as Global-Batch may run batches."""
    sim.config.batch_deployments = {"gpt-35-turbo-instruct"}
    done = await ended(client, await submit(client, jsonl(GOOD)))
    assert done.status == "failed"
    assert done.errors and done.errors.data
    assert done.errors.data[0].code == "invalid_request"
    assert "Global-Batch" in (done.errors.data[0].message or "")


async def test_every_bad_line_is_listed_with_its_line_number(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """A failed batch lists each bad line, so a client can map them to rows."""
    data = jsonl([GOOD[0], line("a", "x"), line("b", "y"), line("a", "z")])
    done = await ended(client, await submit(client, data))
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
        await submit(client, jsonl(GOOD), **{option: value})
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


def _budgeted(custom_id: str, max_tokens: int) -> dict[str, Any]:
    request = line(custom_id, "q")
    return {**request, "body": {**request["body"], "max_tokens": max_tokens}}


async def test_enqueued_token_quota_refuses_a_create_with_token_limit_exceeded(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """A create past its deployment's enqueued-token quota: token_limit_exceeded."""
    data = jsonl([_budgeted(f"r{i}", 100) for i in range(2)])
    sim.config.batch_lines_per_second = 0.001  # the first batch stays running
    sim.config.batch_enqueued_tokens = 300
    first = await submit(client, data)
    with pytest.raises(openai.BadRequestError) as caught:
        await submit(client, data)
    assert "token_limit_exceeded" in str(caught.value)
    instruct = {"model": "gpt-35-turbo-instruct", "prompt": "q", "max_tokens": 100}
    other = {
        "custom_id": "i",
        "method": "POST",
        "url": "/completions",
        "body": instruct,
    }
    elsewhere = await submit(client, jsonl([other]), endpoint="/completions")
    assert elsewhere.status == "validating"  # another deployment, another quota
    await client.batches.cancel(first.id)
    assert (await ended(client, first)).status == "cancelled"
    again = await submit(client, data)
    assert again.status == "validating"


async def test_a_batch_past_its_knob_expires_keeping_the_finished_lines(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """The n-th batch expires after so many lines; those are in its output file."""
    sim.config.batch_expire_after = {2: 3}
    ids = [f"r{i}" for i in range(10)]
    data = jsonl([line(i, "q") for i in ids])
    assert (await ended(client, await submit(client, data))).status == "completed"
    sim.ledger.reset()
    done = await ended(client, await submit(client, data))
    assert done.status == "expired"
    assert done.expired_at is not None and done.completed_at is None
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (10, 3)
    output = await lines_of(client, done.output_file_id)
    finished = {line["custom_id"] for line in output}
    assert len(finished) == 3 and finished <= set(ids)
    assert sim.ledger.batch_line_counts() == dict.fromkeys(finished, 1)
    assert (await client.files.content(done.error_file_id or "")).content == b""


async def test_a_batch_can_be_made_to_fail(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """SimConfig.batch_fail fails the n-th batch before it answers a line."""
    sim.config.batch_fail = {1}
    done = await ended(client, await submit(client, jsonl(GOOD)))
    assert done.status == "failed"
    assert done.errors and done.errors.data
    assert sim.ledger.batch_line_counts() == {}


async def test_counts_advance_line_by_line_at_the_pace(
    client: openai.AsyncAzureOpenAI, sim: SimulatorServer
) -> None:
    """request_counts show the lines done so far while the batch is in progress."""
    sim.config.batch_lines_per_second = 0.001  # one line now, the next much later
    batch = await submit(client, jsonl(GOOD))
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
    batch = await submit(client, jsonl(GOOD))
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
    output = await lines_of(client, done.output_file_id)
    assert len(output) == 1 and output[0]["custom_id"] in ("a", "b")
    with pytest.raises(openai.BadRequestError):
        await client.batches.cancel(batch.id)


async def test_batches_list_newest_first_in_pages(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """GET /batches pages newest first with first_id, last_id and has_more."""
    created = [
        await submit(client, jsonl(GOOD), metadata={"n": str(i)}) for i in range(5)
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
    batch = await submit(client, jsonl([line(i, "q") for i in sorted(ids)]))
    if end == "cancelled":
        while batch.request_counts is None or batch.request_counts.completed < 1:
            await asyncio.sleep(0.01)
            batch = await client.batches.retrieve(batch.id)
        await client.batches.cancel(batch.id)
    done = await ended(client, batch)
    assert done.status == end
    answered = {
        line["custom_id"] for line in await lines_of(client, done.output_file_id)
    }
    unanswered = await lines_of(client, done.error_file_id)
    assert {line["custom_id"] for line in unanswered} == ids - answered
    assert {line["error"]["code"] for line in unanswered} == {code}
    assert all(line["response"] is None for line in unanswered)
    assert set(sim.ledger.batch_line_counts()) == answered


async def test_output_files_keep_the_expiry_the_batch_asked_for(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """output_expires_after dates the output and error files; a bad one is a 400."""
    keep = {"anchor": "created_at", "seconds": 1_209_600}
    batch = await submit(client, jsonl(GOOD), output_expires_after=keep)
    done = await ended(client, batch)
    for file_id in (done.output_file_id, done.error_file_id):
        stored = await client.files.retrieve(file_id or "")
        assert stored.purpose == "batch_output"
        assert stored.expires_at == stored.created_at + 1_209_600
    with pytest.raises(openai.BadRequestError) as caught:
        await submit(
            client,
            jsonl(GOOD),
            output_expires_after={"anchor": "created_at", "seconds": 5},
        )
    assert caught.value.param == "output_expires_after"
