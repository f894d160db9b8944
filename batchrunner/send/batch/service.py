"""
The Files and Batches API of one Azure OpenAI resource, through the SDK's
``AsyncAzureOpenAI`` (``client.files``, ``client.batches``): each call retried
as a row is (timeouts, 429s, 5xx), its failures classified as the online path's.

Input and output files are streamed between disk and the wire, never held whole.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import openai
from openai import AsyncAzureOpenAI
from openai.types import Batch, FileObject

from batchrunner.azure.client import failure_from
from batchrunner.errors import ApiFailure, AuthError
from batchrunner.send.batch.names import PREFIX, is_ours
from batchrunner.send.retry import RetryPolicy, retrying

log = logging.getLogger("batchrunner")

T = TypeVar("T")

#: Seconds an upload or a download may take (files reach 200 MB).
TRANSFER_TIMEOUT = 1800.0
#: Seconds between looks at an uploaded file that the service is still processing.
PROCESSING_POLL = 1.0
PROCESSING_WAIT = 600.0


class BatchService:
    """This resource's files and batches, as the SDK *sdk* reaches them."""

    def __init__(
        self,
        sdk: AsyncAzureOpenAI,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.sdk = sdk
        self._policy = policy
        self._sleep = sleep

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in retrying(self._policy, sleep=self._sleep):
            with attempt:
                try:
                    return await call()
                except openai.OpenAIError as exc:
                    raise _classified(what, exc) from None
        raise AssertionError("unreachable: retrying re-raises the last failure")

    async def batches_of(self, key: str) -> list[Batch]:
        """Every batch of the output named *key*, oldest first."""

        async def every() -> list[Batch]:
            return [b async for b in self.sdk.batches.list(limit=100)]

        found = await self._call("list batches", every)
        ours = [b for b in found if is_ours(b.metadata, key)]
        return sorted(ours, key=lambda b: (b.created_at, b.id))

    async def files_of(self, key: str) -> list[FileObject]:
        """Every uploaded input file of the output named *key*."""

        async def every() -> list[FileObject]:
            return [f async for f in self.sdk.files.list(purpose="batch")]

        found = await self._call("list files", every)
        prefix = f"{PREFIX}-{key}-"
        return [f for f in found if (f.filename or "").startswith(prefix)]

    async def upload(self, path: Path, name: str) -> FileObject:
        """Upload the input file at *path* as *name*; return it once processed."""

        async def send() -> FileObject:
            with path.open("rb") as content:
                return await self.sdk.files.create(
                    file=(name, content, "application/jsonl"),
                    purpose="batch",
                    timeout=TRANSFER_TIMEOUT,
                )

        uploaded = await self._call(f"upload {name}", send)
        return await self._processed(uploaded)

    async def _processed(self, uploaded: FileObject) -> FileObject:
        waited = 0.0
        file_id = uploaded.id

        async def look() -> FileObject:
            return await self.sdk.files.retrieve(file_id)

        while uploaded.status not in ("processed", "error"):
            if waited >= PROCESSING_WAIT:
                break  # create will say what is wrong with it
            await self._sleep(PROCESSING_POLL)
            waited += PROCESSING_POLL
            uploaded = await self._call("look at a file", look)
        if uploaded.status == "error":
            detail = uploaded.status_details or "no reason given"
            msg = f"the service could not process {uploaded.filename}: {detail}"
            raise ApiFailure(kind="FileError", message=msg)
        return uploaded

    async def create(
        self, file_id: str, endpoint: str, metadata: dict[str, str]
    ) -> Batch:
        """Create a batch of *file_id*, answered within 24 hours (one try)."""
        try:
            return await self.sdk.batches.create(
                input_file_id=file_id,
                endpoint=cast(Any, endpoint),
                completion_window="24h",
                metadata=metadata,
            )
        except openai.OpenAIError as exc:
            raise _classified("create a batch", exc) from None

    async def retrieve(self, batch_id: str) -> Batch:
        """The batch *batch_id* as it is now."""
        return await self._call(
            "look at a batch", lambda: self.sdk.batches.retrieve(batch_id)
        )

    async def cancel(self, batch_id: str) -> Batch:
        """Ask the service to cancel *batch_id*."""
        return await self._call(
            "cancel a batch", lambda: self.sdk.batches.cancel(batch_id)
        )

    async def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (gone already counts as deleted)."""

        async def delete() -> None:
            try:
                await self.sdk.files.delete(file_id)
            except openai.NotFoundError:
                return

        await self._call("delete a file", delete)

    async def download(self, file_id: str, target: Path) -> None:
        """Stream the content of *file_id* into *target*."""

        async def fetch() -> None:
            content = self.sdk.files.with_streaming_response.content
            async with content(file_id, timeout=TRANSFER_TIMEOUT) as response:
                with target.open("wb") as file:
                    async for chunk in response.iter_bytes():
                        file.write(chunk)

        await self._call("download a file", fetch)


def _classified(what: str, exc: openai.OpenAIError) -> ApiFailure | AuthError:
    failure = failure_from(exc)
    if failure.status_code in (401, 403):
        return AuthError(f"the service refused to {what}: {failure.message}")
    return failure.replaced(message=f"could not {what}: {failure.message}")


def is_token_limit(failure: ApiFailure) -> bool:
    """Whether *failure* says the enqueued-token quota is full (create, 400)."""
    return "token_limit_exceeded" in f"{failure.code} {failure.message}"
