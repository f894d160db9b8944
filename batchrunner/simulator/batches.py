"""
The Batches API and the Files API's routes: create, retrieve, cancel and list
batches, each run in the background on the simulator's loop.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from batchrunner.simulator import files
from batchrunner.simulator.batchlines import enqueued_tokens, operation_of
from batchrunner.simulator.batchobject import ENDED, Batch
from batchrunner.simulator.batchrun import Runner, run
from batchrunner.simulator.config import Json, SimConfig
from batchrunner.simulator.content import _Call
from batchrunner.simulator.files import FileStore, expiry
from batchrunner.simulator.ledger import Ledger
from batchrunner.simulator.service import (
    PREFIXES,
    CallCounter,
    Outcome,
    invalid,
    limit_of,
    not_found,
    page,
    serve,
)
from batchrunner.simulator.wire import _Answer, _json_answer

#: Metadata limits of the service: 16 pairs, keys of 64 characters, values of 512.
_METADATA_LIMITS = (16, 64, 512)


@dataclass
class BatchService:
    """The files and batches of one simulator."""

    runner: Runner
    counter: CallCounter = field(default_factory=CallCounter)
    batches: dict[str, Batch] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def config(self) -> SimConfig:
        return self.runner.config

    def enqueued(self, deployment: str | None) -> int:
        """Tokens the batches not yet ended hold of *deployment*'s quota."""
        return sum(
            b.enqueued
            for b in self.batches.values()
            if b.enqueued_on == deployment and b.status not in ENDED
        )

    async def create(self, request: web.Request) -> Outcome:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return invalid("The request body is not valid JSON.")
        problem = _check_create(body, self.runner.store)
        if problem is not None:
            return problem
        stored = self.runner.store.files[body["input_file_id"]]
        source = stored.path.open("rb")
        quota = self.config.batch_enqueued_tokens
        deployment, tokens = None, 0
        if quota is not None:
            deployment, tokens = await asyncio.to_thread(
                enqueued_tokens, source, body["endpoint"], self.config
            )
            held = self.enqueued(deployment)
            if held + tokens > quota:
                source.close()
                return _token_limit(tokens, held, quota)
        keep = _output_expiry(body)
        assert not isinstance(keep, str), "checked by _check_create"
        batch = Batch(
            id="batch_" + str(uuid.uuid4()),
            ordinal=len(self.batches) + 1,
            endpoint=body["endpoint"],
            input_file_id=stored.id,
            metadata=body.get("metadata"),
            api_version=request.query.get("api-version", "v1"),
            created_at=int(time.time()),
            enqueued=tokens,
            enqueued_on=deployment,
            output_expires_after=keep,
        )
        self.batches[batch.id] = batch
        self.runner.ledger.note_batch(batch.id, batch.status)
        task = asyncio.create_task(run(batch, source, self.runner))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return _json_answer(200, batch.to_json())

    def retrieve(self, batch_id: str) -> Outcome:
        batch = self.batches.get(batch_id)
        return (
            not_found("batch", batch_id)
            if batch is None
            else _json_answer(200, batch.to_json())
        )

    def cancel(self, batch_id: str) -> Outcome:
        batch = self.batches.get(batch_id)
        if batch is None:
            return not_found("batch", batch_id)
        if batch.status in ENDED:
            return invalid(f"Cannot cancel a batch with status '{batch.status}'.")
        # A finalizing batch has answered every line: it completes regardless.
        if batch.status in ("validating", "in_progress"):
            self.runner.enter(batch, "cancelling")
            batch.woken.set()
        return _json_answer(200, batch.to_json())

    def listing(self, request: web.Request) -> Outcome:
        """``GET /batches``: newest first, ``limit`` (default 20) after ``after``."""
        limit = limit_of(request, 20, 100)
        if not isinstance(limit, int):
            return limit
        items = [b.to_json() for b in reversed(self.batches.values())]
        return _json_answer(200, page(items, request.query.get("after"), limit))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.runner.store.close()


def _check_create(body: object, store: FileStore) -> _Answer | None:
    if not isinstance(body, dict):
        return invalid("The request body must be a JSON object.")
    file_id = body.get("input_file_id")
    stored = store.files.get(file_id) if isinstance(file_id, str) else None
    if stored is None:
        return invalid(f"The input file '{file_id}' was not found.", "input_file_id")
    if stored.purpose != "batch":
        message = (
            f"The input file '{file_id}' has purpose '{stored.purpose}', not 'batch'."
        )
        return invalid(message, "input_file_id")
    endpoint = body.get("endpoint")
    if not isinstance(endpoint, str) or operation_of(endpoint) is None:
        message = (
            f"The endpoint {endpoint!r} is not supported;"
            " use /chat/completions or /completions."
        )
        return invalid(message, "endpoint")
    window = body.get("completion_window")
    if window != "24h":
        message = (
            f"The completion_window {window!r} is not supported;"
            " the only supported value is '24h'."
        )
        return invalid(message, "completion_window")
    keep = _output_expiry(body)
    if isinstance(keep, str):
        return invalid(keep, "output_expires_after")
    return _check_metadata(body.get("metadata"))


def _output_expiry(body: Json) -> int | str | None:
    """The seconds of ``output_expires_after``, None without one, or what is wrong."""
    keep = body.get("output_expires_after")
    if keep is None:
        return None
    if not isinstance(keep, dict):
        return "output_expires_after must be an object with anchor and seconds."
    return expiry(keep.get("anchor"), keep.get("seconds"), "output_expires_after")


def _check_metadata(metadata: object) -> _Answer | None:
    pairs, key_length, value_length = _METADATA_LIMITS
    if metadata is None:
        return None
    ok = (
        isinstance(metadata, dict)
        and len(metadata) <= pairs
        and all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= key_length
            and len(v) <= value_length
            for k, v in metadata.items()
        )
    )
    if ok:
        return None
    message = (
        f"metadata must be at most {pairs} string pairs, keys of at most {key_length}"
        f" characters and values of at most {value_length}."
    )
    return invalid(message, "metadata")


def _token_limit(tokens: int, enqueued: int, quota: int) -> _Answer:
    message = (
        "token_limit_exceeded: Enqueued token limit reached for this model deployment."
        f" The batch would enqueue {tokens} tokens; {enqueued} of the {quota} allowed"
        " are already enqueued. Please wait for your running batches to complete"
        " and try again."
    )
    return invalid(message, code="token_limit_exceeded")


Act = Callable[[web.Request], Awaitable[Outcome]]


def add_batch_api(
    app: web.Application,
    config: SimConfig,
    ledger: Ledger,
    infer: Callable[[_Call, str], _Answer],
) -> BatchService:
    """Serve the Files and Batches API at ``/openai/…`` and ``/openai/v1/…``."""
    store = FileStore()
    service = BatchService(Runner(store, config, ledger, infer))
    ledger._reset_hooks.append(service.counter.reset)

    async def close(_: web.Application) -> None:
        await service.close()

    app.on_cleanup.append(close)

    async def upload(r: web.Request) -> Outcome:
        return await files.upload(r, store, config)

    async def list_files(r: web.Request) -> Outcome:
        return files.listing(r, store)

    async def get_file(r: web.Request) -> Outcome:
        return files.retrieve(store, r.match_info["id"])

    async def delete_file(r: web.Request) -> Outcome:
        return files.delete(store, r.match_info["id"])

    async def file_content(r: web.Request) -> Outcome:
        return files.content(store, r.match_info["id"])

    async def list_batches(r: web.Request) -> Outcome:
        return service.listing(r)

    async def get_batch(r: web.Request) -> Outcome:
        return service.retrieve(r.match_info["id"])

    async def cancel_batch(r: web.Request) -> Outcome:
        return service.cancel(r.match_info["id"])

    table: list[tuple[str, str, str, Act]] = [
        ("POST", "files", "files.create", upload),
        ("GET", "files", "files.list", list_files),
        ("GET", "files/{id}", "files.retrieve", get_file),
        ("DELETE", "files/{id}", "files.delete", delete_file),
        ("GET", "files/{id}/content", "files.content", file_content),
        ("POST", "batches", "batches.create", service.create),
        ("GET", "batches", "batches.list", list_batches),
        ("GET", "batches/{id}", "batches.retrieve", get_batch),
        ("POST", "batches/{id}/cancel", "batches.cancel", cancel_batch),
    ]
    for prefix in PREFIXES:
        for method, path, call, act in table:
            app.router.add_route(method, prefix + path, _handler(call, act, service))
    return service


def _handler(
    call: str, act: Act, service: BatchService
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    runner = service.runner

    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve(
            request, call, runner.config, runner.ledger, service.counter,
            lambda: act(request),
        )  # fmt: skip

    return handle
