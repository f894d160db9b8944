"""
The front of the Files and Batches API: auth, api-version, gates and the
ledger, the same for every call, and the shared list pagination.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from batchrunner.simulator.auth import _authenticate
from batchrunner.simulator.config import REGION, Json, SimConfig
from batchrunner.simulator.gates import Gate
from batchrunner.simulator.ledger import Ledger, LedgerEntry
from batchrunner.simulator.wire import _NO_API_VERSION, _Answer, _error, _json_answer

#: What a call answers: a decided answer, or a stored file to send as it is.
Outcome = _Answer | Path

#: The ``/openai/...`` paths take an api-version; the ``/openai/v1/...`` ones do not.
PREFIXES = ("/openai/", "/openai/v1/")


class CallCounter:
    """How many times each call was made, to find the call a gate is set on."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def reset(self) -> None:
        self._counts.clear()

    def next(self, call: str) -> int:
        self._counts[call] += 1
        return self._counts[call]


def not_found(kind: str, object_id: str) -> _Answer:
    return _json_answer(404, _error("404", f"The {kind} '{object_id}' was not found."))


def invalid(
    message: str, param: str | None = None, code: str = "invalid_request"
) -> _Answer:
    return _json_answer(
        400, _error(code, message, param=param, type="invalid_request_error")
    )


def page(items: Sequence[Json], after: str | None, limit: int) -> Json:
    """One page of a list answer: the items after the one with id *after*."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    data = list(items[start : start + limit])
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(items),
    }


def limit_of(request: web.Request, default: int, upper: int) -> int | _Answer:
    """The ``limit`` query parameter, or the 400 it earns."""
    text = request.query.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= upper:
        return invalid(f"limit must be an integer from 1 to {upper}.", "limit")
    return int(text)


async def _json_body(request: web.Request) -> Json | None:
    """A JSON request's body (a create's options), for the ledger; else None."""
    if request.content_type != "application/json" or not request.body_exists:
        return None
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _v1_key(config: SimConfig, authorization: str | None) -> bool:
    return authorization is not None and authorization == f"Bearer {config.api_key}"


def _gate(config: SimConfig, call: str, nth: int) -> Gate | None:
    for gate in config.gates:
        if gate.call == call and gate.nth == nth:
            return gate
    return None


async def serve(
    request: web.Request,
    call: str,
    config: SimConfig,
    ledger: Ledger,
    counter: CallCounter,
    act: Callable[[], Awaitable[Outcome]],
) -> web.StreamResponse:
    """
    Check the caller, act, record, answer; a gate on the call holds it before
    it acts or, with ``after``, once it is recorded and before it answers.
    """
    ledger._enter()
    try:
        auth, denied = _check_caller(request, config)
        gate = None
        outcome: Outcome
        if denied is not None:
            outcome = denied
        else:
            gate = _gate(config, call, counter.next(call))
            if gate is not None and not gate.after:
                await gate.hold()
            outcome = await act()
        await _record(ledger, request, call, auth, outcome)
        if gate is not None and gate.after:
            await gate.hold()
        return _respond(outcome)
    finally:
        ledger._exit()


def _check_caller(
    request: web.Request, config: SimConfig
) -> tuple[str, _Answer | None]:
    """(auth kind, the refusal if any): credentials, then the api-version."""
    versioned = not request.path.startswith("/openai/v1/")
    auth, denied = _authenticate(config, request.headers)
    if not versioned and _v1_key(config, request.headers.get("Authorization")):
        # The v1 API takes the key as a bearer token too (OpenAI's client does).
        auth, denied = "api-key", None
    if denied is None and versioned and "api-version" not in request.query:
        denied = _json_answer(400, _NO_API_VERSION)
    return auth, denied


async def _record(
    ledger: Ledger, request: web.Request, call: str, auth: str, outcome: Outcome
) -> None:
    status = outcome.status if isinstance(outcome, _Answer) else 200
    entry = LedgerEntry(
        time=time.monotonic(),
        deployment=None,
        operation=call,
        api_version=request.query.get("api-version"),
        auth=auth,
        body=await _json_body(request),
        status=status,
        prompt="",
    )
    ledger._record(entry)


def _respond(outcome: Outcome) -> web.StreamResponse:
    request_id = str(uuid.uuid4())
    headers = {
        "x-request-id": request_id,
        "apim-request-id": request_id,
        "x-ms-region": REGION,
    }
    if isinstance(outcome, Path):
        headers["Content-Type"] = "application/octet-stream"
        return web.FileResponse(outcome, headers=headers)
    headers.update({"Content-Type": outcome.content_type, **outcome.headers})
    assert isinstance(outcome.status, int)
    return web.Response(status=outcome.status, body=outcome.body, headers=headers)
