"""One request, from arrival to answer, as an aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from batchrunner.simulator.auth import _authenticate
from batchrunner.simulator.batches import add_batch_api
from batchrunner.simulator.config import FAULTS, OPERATIONS, REGION, Json, SimConfig
from batchrunner.simulator.content import _Call, _flatten, _plan
from batchrunner.simulator.ledger import Ledger, LedgerEntry
from batchrunner.simulator.limiter import _Limiter
from batchrunner.simulator.wire import (
    _BAD_GATEWAY,
    _BLOCKED,
    _KEY_DENIED,
    _NO_API_VERSION,
    _NO_DEPLOYMENT,
    _NO_RESOURCE,
    _SERVER_ERROR,
    _TIMEOUT,
    _UNAVAILABLE,
    _Answer,
    _error,
    _json_answer,
    _quota_exhausted,
    _Reject,
    _too_many,
)

_MARKER = re.compile(r"\[\[sim:([^\]]*)\]\]")

_MAX_BODY = 64 * 1024 * 1024


class Waker:
    """
    Sleeps until a deadline, on time on average. asyncio wakes a sleeper up to
    a millisecond late (epoll counts whole milliseconds, rounded up) and later
    still when the loop is busy; a 100 ms answer would take 102. This learns
    how late wake-ups come and goes to sleep that much earlier.
    """

    #: The most lateness it makes up for, and how fast it follows a change.
    MAX_LATE = 0.005
    WEIGHT = 0.1

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.late = 0.0
        self._clock = clock

    def wait_for(self, deadline: float) -> float:
        """Seconds to sleep now so as to wake up at *deadline*."""
        return deadline - self._clock() - self.late

    def woke(self, asked: float) -> None:
        """Learn from a wake-up that was asked for at clock time *asked*."""
        sample = self._clock() - asked
        late = (1 - self.WEIGHT) * self.late + self.WEIGHT * sample
        self.late = min(self.MAX_LATE, max(0.0, late))

    async def sleep_until(self, deadline: float) -> None:
        """Return at *deadline* (at once when it has passed)."""
        wait = self.wait_for(deadline)
        if wait > 0:
            asked = self._clock() + wait
            await asyncio.sleep(wait)
            self.woke(asked)


@dataclass
class _State:
    config: SimConfig
    ledger: Ledger
    limiter: _Limiter
    rng: random.Random
    waker: Waker = field(default_factory=Waker)


_STATE = web.AppKey("batchrunner_simulator_state", _State)


def _pick_fault(state: _State, call: _Call) -> str | None:
    """The scripted fault for this request, else a random one, else None."""
    match = _MARKER.search(call.prompt)
    if match:
        script = [name.strip() for name in match[1].split(",")]
        hit = state.ledger._next_hit(call.prompt)
        if hit <= len(script):
            return script[hit - 1]
    rates = state.config.fault_rates
    if not rates:
        return None
    draw, total = state.rng.random(), 0.0
    for kind in sorted(rates):
        total += rates[kind]
        if draw < total:
            return kind
    return None


def _fault_answer(state: _State, call: _Call, fault: str) -> _Answer:
    """The answer *fault* stands for (not ``slow``, which answers normally, late)."""
    match fault:
        case "429":
            retry_ms = state.config.retry_after_ms
            return _too_many(call.operation, call.api_version, "token", retry_ms)
        case "429long":
            return _quota_exhausted(call.operation, call.api_version)
        case "500":
            message = _SERVER_ERROR.format(call.request_id)
            return _json_answer(
                500, _error(None, message, type="server_error", param=None)
            )
        case "502":
            return _Answer(502, _BAD_GATEWAY.encode(), "text/html")
        case "503":
            return _Answer(503, _UNAVAILABLE.encode(), "text/plain")
        case "408":
            return _json_answer(408, _TIMEOUT)
        case "reset":
            return _Answer("reset")
        case "401":
            return _json_answer(401, state.config.key_denied_body or _KEY_DENIED)
        case "404":
            return _json_answer(404, state.config.not_found_body or _NO_DEPLOYMENT)
    message = f"unknown simulator fault {fault!r}; known faults: {', '.join(FAULTS)}"
    return _json_answer(400, _error("SimulatorError", message))


def _infer(
    state: _State, call: _Call, model: str, *, rate_limited: bool = True
) -> _Answer:
    """
    Answer a request that passed the auth, api-version and deployment checks.

    A batch's lines are answered here too, without *rate_limited*: they draw on
    the enqueued-token quota, not on the deployment's per-minute one.
    """
    config = state.config
    fault = _pick_fault(state, call)
    if fault not in (None, "slow"):
        return _fault_answer(state, call, fault)
    try:
        plan = _plan(call, config, model)
    except _Reject as reject:
        return reject.answer
    if rate_limited:
        charge = math.ceil(plan.charge * config.charge_factor)
        refusal = state.limiter.charge(config, charge)
        if refusal is not None:
            kind, wait = refusal
            wait_ms = max(1, math.ceil(wait * 1000))
            return _too_many(call.operation, call.api_version, kind, wait_ms)
        state.ledger.add_charge(charge)
    if config.block_word and config.block_word in call.prompt:
        return _json_answer(400, _BLOCKED)
    redact = bool(config.redact_word) and config.redact_word in call.prompt
    answer = _json_answer(200, plan.build(call, model, redact))
    answer.stall = config.slow_seconds if fault == "slow" else 0.0
    return answer


def _decide(
    state: _State, call: _Call, headers: Mapping[str, str]
) -> tuple[str, _Answer]:
    """(auth kind, answer), checked in Azure's order: auth, api-version, deployment."""
    auth, denied = _authenticate(state.config, headers)
    if denied is not None:
        return auth, denied
    if call.api_version is None:
        return auth, _json_answer(400, _NO_API_VERSION)
    if call.operation not in OPERATIONS:
        return auth, _json_answer(404, _NO_RESOURCE)
    model = state.config.deployments.get(call.deployment or "")
    if model is None:
        missing = state.config.not_found_body or _NO_DEPLOYMENT
        return auth, _json_answer(404, missing)
    return auth, _infer(state, call, model)


async def _read_call(request: web.Request, operation: str) -> _Call:
    body: Json | None = None
    if request.can_read_body:
        with contextlib.suppress(ValueError):
            parsed = json.loads(await request.read())
            body = parsed if isinstance(parsed, dict) else None
    return _Call(
        operation=operation,
        deployment=request.match_info.get("deployment"),
        api_version=request.query.get("api-version"),
        body=body,
        prompt=_flatten(operation, body),
        request_id=str(uuid.uuid4()),
    )


async def _serve(state: _State, request: web.Request, operation: str) -> web.Response:
    arrived = time.monotonic()
    call = await _read_call(request, operation)
    auth, answer = _decide(state, call, request.headers)
    entry = LedgerEntry(
        time=time.monotonic(),
        deployment=call.deployment,
        operation=operation,
        api_version=call.api_version,
        auth=auth,
        body=call.body,
        status=answer.status,
        prompt=call.prompt,
    )
    state.ledger._record(entry)
    # The latency is the answer's whole time from the request's arrival, as
    # with a service that has cores of its own: the simulator's own work (it
    # shares a machine with the client under test) is taken out of it.
    delay = state.config.latency + answer.stall
    if delay > 0:
        await state.waker.sleep_until(arrived + delay)
    if not isinstance(answer.status, int):
        # Drop the connection with nothing sent. aiohttp then finds the transport
        # closed and quietly discards the response returned here.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)
    headers = {
        "x-request-id": call.request_id,
        "apim-request-id": str(uuid.uuid4()),
        "x-ms-region": REGION,
        "Content-Type": answer.content_type,
        **state.limiter.headers(state.config),
        **answer.headers,
    }
    if call.deployment is not None:
        headers["x-ms-deployment-name"] = call.deployment
    return web.Response(status=answer.status, body=answer.body, headers=headers)


def _handler(operation: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[_STATE]
        state.ledger._enter()
        try:
            return await _serve(state, request, operation)
        finally:
            state.ledger._exit()

    return handle


def _check_faults(rates: Mapping[str, float]) -> None:
    unknown = sorted(set(rates) - set(FAULTS))
    if unknown:
        msg = f"unknown fault kinds {unknown}; known faults: {', '.join(FAULTS)}"
        raise ValueError(msg)


def create_app(config: SimConfig, ledger: Ledger) -> web.Application:
    """The simulator as an aiohttp application that records into *ledger*."""
    _check_faults(config.fault_rates)
    config.header_mode  # noqa: B018 - refuses an unknown mode now, not per answer
    state = _State(config, ledger, _Limiter(), random.Random(config.seed))

    def reset() -> None:
        state.limiter.reset()
        state.rng = random.Random(config.seed)

    ledger._reset_hooks.append(reset)
    # aiohttp's 1 MiB default would refuse a long-context prompt or a big batch.
    app = web.Application(client_max_size=_MAX_BODY)
    app[_STATE] = state
    prefix = "/openai/deployments/{deployment}/"
    app.router.add_post(prefix + "chat/completions", _handler("chat"))
    app.router.add_post(prefix + "completions", _handler("completions"))
    app.router.add_post(prefix + "embeddings", _handler("embeddings"))
    app.router.add_get(STATS_PATH, _stats)

    def infer_line(call: _Call, model: str) -> _Answer:
        return _infer(state, call, model, rate_limited=False)

    add_batch_api(app, config, ledger, infer_line)
    app.router.add_route("*", "/{tail:.*}", _handler("other"))
    return app


#: Where a simulator in another process tells what it received (not Azure's API).
STATS_PATH = "/_simulator/stats"


async def _stats(request: web.Request) -> web.Response:
    ledger = request.app[_STATE].ledger
    return web.json_response(ledger.snapshot())
