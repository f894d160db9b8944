"""
A batch's input file, line by line: checked as Azure validates it, priced in
enqueued tokens, and each line answered into an output or error-file line.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from batchrunner.simulator.config import Json, SimConfig
from batchrunner.simulator.content import _Call, _flatten, _plan
from batchrunner.simulator.wire import _NO_DEPLOYMENT, _Answer, _Reject

#: Batch endpoint (without a ``/v1`` prefix) → the simulator's operation.
ENDPOINTS = {"/chat/completions": "chat", "/completions": "completions"}

_BOM = b"\xef\xbb\xbf"

#: The most line errors a failed batch lists.
MAX_ERRORS = 1000

_NO_DEPLOYMENT_NAME = (
    "Validation failed: A valid model deployment name couldn't be extracted from the"
    " input file. Please ensure that each line of the file has a valid model"
    " deployment name in the 'model' field of the 'body', and that the file is UTF-8"
    " encoded without a byte order mark (BOM)."
)


def operation_of(endpoint: str) -> str | None:
    """The operation a batch endpoint (``/chat/completions``, ``/v1/…``) stands for."""
    return ENDPOINTS.get(endpoint.removeprefix("/v1"))


def _error(code: str, message: str, line: int | None, param: str | None = None) -> Json:
    return {"code": code, "message": message, "param": param, "line": line}


@dataclass
class CheckedInput:
    """What validation found: the byte offset of each request line, or errors."""

    offsets: list[int] = field(default_factory=list)
    deployment: str | None = None
    errors: list[Json] = field(default_factory=list)


def _lines(handle: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """(line number from 1, byte offset, text) of each non-blank line."""
    handle.seek(0)
    offset = 0
    for number, raw in enumerate(handle, start=1):
        if raw.strip():
            yield number, offset, raw
        offset += len(raw)


def _request(raw: bytes) -> Json | None:
    """The request a line holds, or None when it is not one."""
    try:
        # json.loads would also take UTF-16 or UTF-32 bytes; the service takes UTF-8.
        line = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    ok = (
        isinstance(line, dict)
        and isinstance(line.get("custom_id"), str)
        and line.get("method") == "POST"
        and isinstance(line.get("url"), str)
        and isinstance(line.get("body"), dict)
    )
    return line if ok else None


def check_input(handle: IO[bytes], endpoint: str, config: SimConfig) -> CheckedInput:
    """Validate a batch input file as the service does before running it."""
    checked = CheckedInput()
    handle.seek(0)
    if handle.read(3) == _BOM:
        checked.errors.append(_error("model_not_found", _NO_DEPLOYMENT_NAME, 1))
        return checked
    seen: set[str] = set()
    errors = checked.errors
    for number, offset, raw in _lines(handle):
        checked.offsets.append(offset)
        request = _request(raw)
        if request is None:
            message = (
                f"Line {number} is not a valid request line: a JSON object with"
                " custom_id, method POST, url and body."
            )
            errors.append(_error("invalid_json_line", message, number))
        else:
            errors.extend(_check_line(request, number, endpoint, config, checked, seen))
        if len(errors) >= MAX_ERRORS:
            del errors[MAX_ERRORS:]
            return checked
    errors.extend(_check_file(checked, config))
    return checked


def _check_line(
    request: Json,
    number: int,
    endpoint: str,
    config: SimConfig,
    checked: CheckedInput,
    seen: set[str],
) -> list[Json]:
    errors = []
    custom_id = request["custom_id"]
    if custom_id in seen:
        message = f"The custom_id '{custom_id}' is used by more than one request."
        errors.append(_error("duplicate_custom_id", message, number, "custom_id"))
    seen.add(custom_id)
    if request["url"].removeprefix("/v1") != endpoint.removeprefix("/v1"):
        url = request["url"]
        message = f"The url '{url}' does not match the batch's endpoint '{endpoint}'."
        errors.append(_error("url_mismatch", message, number, "url"))
    deployment = request["body"].get("model")
    if not isinstance(deployment, str) or deployment not in config.deployments:
        message = f"The model deployment '{deployment}' was not found."
        errors.append(_error("model_not_found", message, number, "body.model"))
    elif checked.deployment is None:
        checked.deployment = deployment
    elif deployment != checked.deployment:
        message = (
            f"The model deployment '{deployment}' differs from '{checked.deployment}';"
            " every line of a batch must use the same deployment."
        )
        errors.append(_error("model_mismatch", message, number, "body.model"))
    return errors


def _check_file(checked: CheckedInput, config: SimConfig) -> list[Json]:
    if not checked.offsets:
        message = (
            "The input file is empty. Please ensure that the batch contains at least"
            " one request."
        )
        return [_error("empty_file", message, None)]
    if len(checked.offsets) > config.batch_max_requests:
        message = (
            f"The input file has {len(checked.offsets)} requests; a batch may hold"
            f" at most {config.batch_max_requests}."
        )
        return [_error("too_many_tasks", message, None)]
    batch_ok = config.batch_deployments
    if (
        checked.deployment is not None
        and batch_ok is not None
        and checked.deployment not in batch_ok
    ):
        message = (
            f"The deployment '{checked.deployment}' is not a Global-Batch or Data Zone"
            " Batch deployment; batches need one."
        )
        return [_error("invalid_request", message, None, "body.model")]
    return []


def enqueued_tokens(
    handle: IO[bytes], endpoint: str, config: SimConfig
) -> tuple[str | None, int]:
    """
    The deployment of the file's first request and the tokens its requests
    would enqueue (prompts plus answer budgets), as the quota counts them.
    """
    operation = operation_of(endpoint) or "chat"
    first: str | None = None
    total = 0
    for _, _, raw in _lines(handle):
        request = _request(raw)
        deployment = None if request is None else request["body"].get("model")
        model = config.deployments.get(str(deployment))
        if request is None or model is None:
            continue
        first = first or deployment
        try:
            total += _plan(_call(operation, request, ""), config, model).charge
        except _Reject:
            continue
    return first, total


def _call(operation: str, request: Json, api_version: str) -> _Call:
    body = request["body"]
    return _Call(
        operation=operation,
        deployment=body.get("model"),
        api_version=api_version,
        body=body,
        prompt=_flatten(operation, body),
        request_id=str(uuid.uuid4()),
    )


@dataclass(frozen=True)
class LineAnswer:
    """One answered line: where it goes, the JSONL text, and its usage if ok."""

    custom_id: str
    ok: bool
    text: bytes
    usage: Json | None


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


_RESET = {
    "code": "server_error",
    "message": "The model's connection was reset before it answered.",
}


def answer_line(
    raw: bytes,
    operation: str,
    api_version: str,
    config: SimConfig,
    infer: Callable[[_Call, str], _Answer],
) -> LineAnswer:
    """Answer one (validated) input line with the online machinery."""
    request = _request(raw)
    assert request is not None, "validation let an invalid line through"
    call = _call(operation, request, api_version)
    model = config.deployments.get(call.deployment or "")
    answer = infer(call, model) if model is not None else _json_answer_404()
    custom_id = request["custom_id"]
    head = b'{"id":"batch_req_%s","custom_id":%s' % (
        uuid.uuid4().hex.encode(),
        _dump(custom_id),
    )
    if not isinstance(answer.status, int):
        text = head + b',"response":null,"error":' + _dump(_RESET) + b"}\n"
        return LineAnswer(custom_id, False, text, None)
    # The online answer's bytes go into the line as they are, not re-encoded.
    text = (
        b'%s,"response":{"status_code":%d,"request_id":"%s","body":%s},"error":null}\n'
        % (
            head,
            answer.status,
            call.request_id.encode(),
            _body(answer),
        )
    )
    ok = answer.status == 200
    usage = json.loads(answer.body).get("usage") if ok else None
    return LineAnswer(custom_id, ok, text, usage)


_UNFINISHED = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": (
        "batch_cancelled",
        "The batch was cancelled before this request ran.",
    ),
}


def unfinished_line(raw: bytes, status: str) -> bytes:
    """The error line of a request its batch ended (*status*) before answering."""
    request = _request(raw)
    assert request is not None, "validation let an invalid line through"
    code, message = _UNFINISHED[status]
    line = {
        "id": "batch_req_" + uuid.uuid4().hex,
        "custom_id": request["custom_id"],
        "response": None,
        "error": {"code": code, "message": message},
    }
    return _dump(line) + b"\n"


def _json_answer_404() -> _Answer:
    return _Answer(404, json.dumps(_NO_DEPLOYMENT).encode())


def _body(answer: _Answer) -> bytes:
    """The answer's JSON body; a gateway's text answer wrapped as an error."""
    if answer.content_type == "application/json":
        return answer.body
    text = answer.body.decode("utf-8", "replace")
    return _dump({"error": {"code": str(answer.status), "message": text}})
