"""The Azure OpenAI simulator, driven by the real SDK over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import batchrunner
from batchrunner.prepare.tokens import TokenCounter
from batchrunner.simulator import SimConfig, SimulatorServer, Waker
from batchrunner.simulator.config import DEFAULT_TPM
from tests.fakes import FakeClock

API_VERSION = "2024-10-21"
CHAT = "gpt-4o-mini"
CHAT_MODEL = "gpt-4o-mini-2024-07-18"
INSTRUCT = "gpt-35-turbo-instruct"
INSTRUCT_MODEL = "gpt-35-turbo-instruct-0914"
EMBED = "text-embedding-3-small"
CHAT_PATH = f"/openai/deployments/{CHAT}/chat/completions"


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer() as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with _client(sim) as sdk:
        yield sdk


def _client(sim: SimulatorServer, **options: Any) -> openai.AsyncAzureOpenAI:
    options.setdefault("api_key", "sim-key")
    return openai.AsyncAzureOpenAI(
        azure_endpoint=sim.url, api_version=API_VERSION, max_retries=0, **options
    )


def _user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


async def _chat(client: openai.AsyncAzureOpenAI, text: str, **params: Any) -> Any:
    return await client.chat.completions.create(
        model=CHAT, messages=_user(text), **params
    )


async def test_chat_answer_has_azure_shape_and_exact_usage(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """A chat answer has Azure's fields and the TokenCounter's exact token counts."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three rivers of Europe, please."},
    ]
    answer = await client.chat.completions.create(model=CHAT, messages=messages)
    counter = TokenCounter(CHAT_MODEL)
    choice = answer.choices[0]
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-")
    assert answer.model == CHAT_MODEL
    assert answer.system_fingerprint and answer.system_fingerprint.startswith("fp_")
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content and "Name three rivers" in choice.message.content
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == counter.count_chat(messages)
    assert answer.usage.completion_tokens == counter.count_text(choice.message.content)
    assert answer.usage.total_tokens == (
        answer.usage.prompt_tokens + answer.usage.completion_tokens
    )
    assert answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 0
    assert answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 0
    extra = answer.model_extra or {}
    assert extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert (choice.model_extra or {})["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }


async def test_chat_answer_is_deterministic(client: openai.AsyncAzureOpenAI) -> None:
    """The same request gets the same answer text and usage."""
    first = await _chat(client, "Tell me about the weather in Oslo")
    second = await _chat(client, "Tell me about the weather in Oslo")
    other = await _chat(client, "Tell me about the weather in Rome")
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage
    assert first.choices[0].message.content != other.choices[0].message.content


async def test_chat_n_gives_n_choices(client: openai.AsyncAzureOpenAI) -> None:
    """n=3 gives three indexed choices whose tokens add up in usage."""
    answer = await _chat(client, "Suggest a name for a cat", n=3)
    counter = TokenCounter(CHAT_MODEL)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    tokens = sum(counter.count_text(c.message.content) for c in answer.choices)
    assert answer.usage.completion_tokens == tokens


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
async def test_token_limit_cuts_the_answer(
    client: openai.AsyncAzureOpenAI, limit: str
) -> None:
    """A token limit shorter than the answer cuts it and says "length"."""
    full = await _chat(client, "Explain quantum tunnelling")
    cut = await _chat(client, "Explain quantum tunnelling", **{limit: 4})
    content = cut.choices[0].message.content
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 4
    assert full.choices[0].message.content.startswith(content)
    assert TokenCounter(CHAT_MODEL).count_text(content) == 4


async def test_completions_answer_each_prompt_n_times(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """Legacy completions give n text choices per prompt in the legacy shape."""
    prompts = ["Once upon a time", "The capital of France is"]
    answer = await client.completions.create(
        model=INSTRUCT, prompt=prompts, n=2, max_tokens=200
    )
    counter = TokenCounter(INSTRUCT_MODEL)
    assert answer.object == "text_completion"
    assert answer.model == INSTRUCT_MODEL
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "stop" for c in answer.choices)
    assert "Once upon a time" in answer.choices[0].text
    assert "The capital of France" in answer.choices[2].text
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == sum(counter.count_text(p) for p in prompts)
    assert answer.usage.completion_tokens == sum(
        counter.count_text(c.text) for c in answer.choices
    )
    extra = answer.model_extra or {}
    assert [r["prompt_index"] for r in extra["prompt_filter_results"]] == [0, 1]


async def test_completions_stop_at_16_tokens_by_default(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """Without max_tokens a completion stops at Azure's default of 16 tokens."""
    answer = await client.completions.create(
        model=INSTRUCT, prompt="Write a long story about a lighthouse keeper"
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 16


async def test_embeddings_base64_default_decodes_to_the_float_vectors(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """The SDK's default base64 embeddings decode to the floats of the float format."""
    texts = ["alpha", "beta gamma"]
    packed = await client.embeddings.create(model=EMBED, input=texts)
    plain = await client.embeddings.create(
        model=EMBED, input=texts, encoding_format="float"
    )
    assert sim.ledger.bodies()[0]["encoding_format"] == "base64"
    assert [d.embedding for d in packed.data] == [d.embedding for d in plain.data]
    assert [d.index for d in packed.data] == [0, 1]
    assert len(packed.data[0].embedding) == 1536
    assert math.isclose(math.hypot(*packed.data[0].embedding), 1.0, rel_tol=1e-5)
    assert packed.data[0].embedding != packed.data[1].embedding
    assert packed.model == EMBED
    assert packed.usage.prompt_tokens == packed.usage.total_tokens
    small = await client.embeddings.create(model=EMBED, input="alpha", dimensions=64)
    assert len(small.data[0].embedding) == 64


@pytest.mark.parametrize(
    ("key", "deployment", "status", "code"),
    [
        ("sim-key", CHAT, 400, "MissingApiVersionParameter"),
        ("wrong", CHAT, 401, "401"),
        ("sim-key", "nope", 400, "MissingApiVersionParameter"),
    ],
)
async def test_checks_run_in_azure_order_without_api_version(
    sim: SimulatorServer, key: str, deployment: str, status: int, code: str
) -> None:
    """Without ?api-version= a bad key fails first, and the version before the route."""
    async with httpx2.AsyncClient(base_url=sim.url) as http:
        response = await http.post(
            f"/openai/deployments/{deployment}/chat/completions",
            headers={"api-key": key},
            json={"messages": _user("hi")},
        )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    assert response.json()["error"]["code"] == code
    if status == 400:
        assert response.json()["error"]["message"] == (
            "The api-version query parameter (?api-version=) is required for all"
            " requests."
        )
    assert sim.ledger.entries[0].api_version is None


async def test_unknown_route_is_recorded_and_not_found(sim: SimulatorServer) -> None:
    """A path the simulator does not serve gets Azure's 404 and a ledger entry."""
    async with httpx2.AsyncClient(base_url=sim.url) as http:
        response = await http.post(
            "/openai/responses",
            params={"api-version": API_VERSION},
            headers={"api-key": "sim-key"},
            json={"input": "hi"},
        )
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "404", "message": "Resource not found"}
    }
    assert [(e.operation, e.status) for e in sim.ledger.entries] == [("other", 404)]


async def test_unknown_deployment_is_not_found(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """An unknown deployment raises NotFoundError with code DeploymentNotFound."""
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-9", messages=_user("hi"))
    assert caught.value.code == "DeploymentNotFound"


async def test_wrong_key_is_refused(sim: SimulatorServer) -> None:
    """A wrong api-key raises AuthenticationError with Azure's 401 body."""
    async with _client(sim, api_key="wrong") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await _chat(client, "hi")
    assert caught.value.code == "401"
    assert "invalid subscription key" in caught.value.message
    assert [(e.auth, e.status) for e in sim.ledger.entries] == [("api-key", 401)]


async def test_key_can_change_while_running(sim: SimulatorServer) -> None:
    """A key changed in the live config takes effect on the next request."""
    sim.config.api_key = "rotated"
    async with _client(sim, api_key="rotated") as client:
        await _chat(client, "hi")
    assert sim.ledger.count(200) == 1


async def test_bearer_token_goes_through_the_validator(sim: SimulatorServer) -> None:
    """A bearer token is accepted iff the validator says so, else Azure's token 401."""
    async with _client(sim, api_key=None, azure_ad_token="tok") as client:
        with pytest.raises(openai.AuthenticationError) as unset:
            await _chat(client, "hi")
        sim.config.bearer_validator = lambda token: token == "good"
        with pytest.raises(openai.AuthenticationError) as refused:
            await _chat(client, "hi")
    async with _client(sim, api_key=None, azure_ad_token="good") as client:
        await _chat(client, "hi")
    assert unset.value.code is None
    assert refused.value.body == {
        "statusCode": 401,
        "message": "Unauthorized. Access token is missing, invalid, audience is"
        " incorrect (https://cognitiveservices.azure.com), or have expired.",
    }
    assert [(e.auth, e.status) for e in sim.ledger.entries] == [
        ("bearer", 401),
        ("bearer", 401),
        ("bearer", 200),
    ]


async def test_request_rate_limit_gives_429_with_retry_headers(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """Over the per-window request limit the answer is Azure's 429 with both waits."""
    sim.config.rpm, sim.config.window = 6, 10.0
    first = await client.chat.completions.with_raw_response.create(
        model=CHAT, messages=_user("hi")
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await _chat(client, "hi again")
    assert first.headers["x-ratelimit-limit-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    headers = caught.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 10
    assert 0 < int(headers["retry-after-ms"]) <= 10_000
    assert math.ceil(int(headers["retry-after-ms"]) / 1000) == int(
        headers["retry-after"]
    )
    assert caught.value.code == "429"
    assert "ChatCompletions_Create" in caught.value.message
    assert "call rate limit" in caught.value.message
    assert f"Please retry after {headers['retry-after']} second" in (
        caught.value.message
    )
    assert (sim.ledger.count(200), sim.ledger.count(429)) == (1, 1)


async def test_token_rate_limit_charges_max_tokens_but_not_refusals(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """Prompt tokens plus max_tokens are charged; a 429'd request is not."""
    sim.config.tpm, sim.config.window = 600, 60.0
    messages = _user("hi")
    prompt_tokens = TokenCounter(CHAT_MODEL).count_chat(messages)
    first = await client.chat.completions.with_raw_response.create(
        model=CHAT, messages=messages, max_tokens=500
    )
    with pytest.raises(openai.RateLimitError) as caught:
        await _chat(client, "hi", max_tokens=500)
    await _chat(client, "hi", max_tokens=50)
    assert first.headers["x-ratelimit-limit-tokens"] == "600"
    remaining = int(first.headers["x-ratelimit-remaining-tokens"])
    assert remaining == 600 - prompt_tokens - 500
    assert "token rate limit" in caught.value.message
    assert caught.value.response.headers["retry-after-ms"]
    assert sim.ledger.count(200) == 2


async def test_random_faults_follow_the_seed() -> None:
    """Random faults are drawn from the seed, so two runs see the same sequence."""
    runs = []
    for _ in range(2):
        config = SimConfig(fault_rates={"500": 0.4, "503": 0.2}, seed=7)
        with SimulatorServer(config) as sim:
            async with _client(sim) as client:
                for _ in range(12):
                    with contextlib.suppress(openai.InternalServerError):
                        await _chat(client, "hi")
            runs.append([entry.status for entry in sim.ledger.entries])
    assert runs[0] == runs[1]
    assert {200, 500, 503} <= set(runs[0])


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("429", openai.RateLimitError, 429),
        ("429long", openai.RateLimitError, 429),
        ("500", openai.InternalServerError, 500),
        ("502", openai.InternalServerError, 502),
        ("503", openai.InternalServerError, 503),
        ("408", openai.APIStatusError, 408),
        ("401", openai.AuthenticationError, 401),
        ("404", openai.NotFoundError, 404),
    ],
)
async def test_scripted_fault_then_normal_answer(
    sim: SimulatorServer,
    client: openai.AsyncAzureOpenAI,
    fault: str,
    error: type[openai.APIStatusError],
    status: int,
) -> None:
    """A scripted fault answers its request only; the next one is answered normally."""
    prompt = f"[[sim:{fault}]] tell me something"
    with pytest.raises(error) as caught:
        await _chat(client, prompt)
    answer = await _chat(client, prompt)
    assert caught.value.status_code == status
    assert caught.value.request_id == caught.value.response.headers["x-request-id"]
    assert caught.value.response.headers["apim-request-id"]
    assert answer.choices[0].finish_reason == "stop"
    assert [e.status for e in sim.ledger.entries] == [status, 200]


async def test_scripted_fault_bodies_are_azures(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """Scripted faults carry Azure's bodies and retry headers."""
    prompt = "[[sim:429,429long,500,502,503,408]] hello"
    caught: list[openai.APIStatusError] = []
    for _ in range(6):
        with pytest.raises(openai.APIStatusError) as error:
            await _chat(client, prompt)
        caught.append(error.value)
    quick, daily, server, gateway, unavailable, timeout = caught
    assert quick.response.headers["retry-after-ms"] == "200"
    assert quick.response.headers["retry-after"] == "1"
    assert daily.response.headers["retry-after"] == "86400"
    assert daily.response.headers["retry-after-ms"] == "86400000"
    assert "Please retry after 86400 seconds." in daily.message
    assert server.type == "server_error"
    assert server.request_id is not None and server.request_id in server.message
    assert isinstance(gateway.body, str) and "502 Bad Gateway" in gateway.body
    assert gateway.response.headers["content-type"].startswith("text/html")
    assert isinstance(unavailable.body, str)
    assert timeout.code == "Timeout"
    assert timeout.message.endswith("The operation was timeout.")


async def test_scripted_faults_count_per_prompt(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """Each marker-bearing prompt has its own counter; a ledger reset restarts it."""
    statuses = []
    for text in ["[[sim:500,503]] a", "[[sim:500,503]] b"] * 3:
        try:
            await _chat(client, text)
            statuses.append(200)
        except openai.APIStatusError as error:
            statuses.append(error.status_code)
    assert statuses == [500, 500, 503, 503, 200, 200]
    sim.ledger.reset()
    with pytest.raises(openai.InternalServerError):
        await _chat(client, "[[sim:500,503]] a")
    assert sim.ledger.count() == 1


async def test_unknown_scripted_fault_is_reported(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """A misspelt fault name gets a 400 naming it instead of silently passing."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _chat(client, "[[sim:5OO]] hi")
    assert "'5OO'" in caught.value.message


async def test_reset_drops_the_connection(
    sim: SimulatorServer,
    client: openai.AsyncAzureOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scripted reset drops the connection: APIConnectionError, no server noise."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    with pytest.raises(openai.APIConnectionError) as caught:
        await _chat(client, "[[sim:reset]] hi")
    await _chat(client, "[[sim:reset]] hi")
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert [e.status for e in sim.ledger.entries] == ["reset", 200]
    assert sim.ledger.count("reset") == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_slow_answer_trips_the_client_timeout(sim: SimulatorServer) -> None:
    """A scripted slow answer outlasts a short client timeout: APITimeoutError."""
    sim.config.slow_seconds = 30.0
    async with _client(sim, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            await _chat(client, "[[sim:slow]] hi")
        answer = await _chat(client, "[[sim:slow]] hi")
    assert answer.choices[0].finish_reason == "stop"
    assert sim.ledger.count() == 2


async def test_block_word_is_a_content_filter_400(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """A prompt with the block word gets Azure's content_filter 400."""
    with pytest.raises(openai.BadRequestError) as caught:
        await _chat(client, "please BLOCKME now")
    error = caught.value
    assert (error.code, error.param) == ("content_filter", "prompt")
    assert isinstance(error.body, dict)
    assert error.body["status"] == 400
    assert error.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error.body["innererror"]["content_filter_result"]["sexual"]["filtered"]


async def test_redact_word_filters_the_output(client: openai.AsyncAzureOpenAI) -> None:
    """A prompt with the redact word gets a 200 whose answer was filtered."""
    chat = await _chat(client, "please REDACTME now")
    text = await client.completions.create(
        model=INSTRUCT, prompt="please REDACTME now", max_tokens=100
    )
    assert chat.choices[0].finish_reason == "content_filter"
    assert chat.choices[0].message.content is None
    assert chat.usage.completion_tokens == 0
    assert text.choices[0].finish_reason == "content_filter"
    assert text.choices[0].text


async def test_every_answer_carries_azure_headers(
    client: openai.AsyncAzureOpenAI,
) -> None:
    """Answers carry request ids, region, deployment and the deployment's quota."""
    raw = await client.chat.completions.with_raw_response.create(
        model=CHAT, messages=_user("hi")
    )
    assert raw.request_id == raw.headers["x-request-id"]
    assert raw.headers["apim-request-id"] != raw.headers["x-request-id"]
    assert raw.headers["x-ms-region"]
    assert raw.headers["x-ms-deployment-name"] == CHAT
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-ratelimit-limit-tokens"] == str(DEFAULT_TPM)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < DEFAULT_TPM
    assert raw.parse()._request_id == raw.headers["x-request-id"]


async def test_ledger_records_each_request(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """The ledger keeps what was received: route, version, auth, body and prompt."""
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    await client.chat.completions.create(model=CHAT, messages=messages)
    await client.embeddings.create(model=EMBED, input=["one", "two"])
    chat, embed = sim.ledger.entries
    assert (chat.deployment, chat.operation, chat.api_version, chat.auth) == (
        CHAT,
        "chat",
        API_VERSION,
        "api-key",
    )
    assert chat.prompt == "Be brief.\nHello"
    assert chat.body is not None and chat.body["messages"] == messages
    assert (embed.operation, embed.prompt) == ("embeddings", "one\ntwo")
    assert sim.ledger.bodies() == [chat.body, embed.body]
    sim.ledger.reset()
    assert (sim.ledger.count(), sim.ledger.entries) == (0, [])


async def test_ledger_counts_concurrent_requests(
    sim: SimulatorServer, client: openai.AsyncAzureOpenAI
) -> None:
    """Ten concurrent requests held by latency are all in flight at once."""
    sim.config.latency = 0.5
    await asyncio.gather(*(_chat(client, f"question {i}") for i in range(10)))
    assert sim.ledger.max_in_flight == 10
    assert sim.ledger.in_flight == 0
    assert sim.ledger.count(200) == 10


def test_module_entry_point_prints_its_address() -> None:
    """``python -m batchrunner.simulator --port 0`` prints where it listens."""
    root = Path(batchrunner.__file__).resolve().parent.parent
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    with subprocess.Popen(
        [sys.executable, "-m", "batchrunner.simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
    assert re.fullmatch(
        r"batchrunner simulator listening on http://127\.0\.0\.1:\d+\n", line
    )


def test_waker_learns_how_late_wake_ups_come_and_sleeps_that_much_less() -> None:
    """Wake-ups that come 2 ms late teach the waker to ask for 2 ms less."""
    clock = FakeClock(100.0)
    waker = Waker(clock)
    assert waker.wait_for(100.1) == pytest.approx(0.1)
    for _ in range(200):  # every wake-up 2 ms after the time asked for
        asked = clock.now + waker.wait_for(clock.now + 0.1)
        clock.now = asked + 0.002
        waker.woke(asked)
    assert waker.late == pytest.approx(0.002, abs=1e-5)
    assert waker.wait_for(clock.now + 0.1) == pytest.approx(0.098, abs=1e-5)


def test_waker_makes_up_for_a_few_milliseconds_at_most_never_a_negative() -> None:
    """What the waker makes up for stays between zero and Waker.MAX_LATE."""
    clock = FakeClock(100.0)
    waker = Waker(clock)
    for _ in range(100):  # a stalled loop: wake-ups a second late
        waker.woke(clock.now - 1.0)
    assert waker.late == Waker.MAX_LATE
    for _ in range(200):  # early wake-ups teach nothing below zero
        waker.woke(clock.now + 1.0)
    assert waker.late == 0.0
