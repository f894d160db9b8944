"""
Submitting rows: their requests written into input files within the limits,
each uploaded and made a batch, named so that the service's lists say whose.

A create is retried with care: after a timeout or a server fault the batch may
exist after all, so the list is looked at before the next try; a create the
enqueued-token quota refuses is tried again after 5, 10, 20 … s (the docs' way),
and given up, its file deleted, when that cannot work within the deadline.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from openai.types import Batch

from batchrunner.config.settings import Settings
from batchrunner.errors import ApiFailure
from batchrunner.records import Request
from batchrunner.send.batch.lifecycle import token_limit_waits
from batchrunner.send.batch.lines import batch_url, custom_ids, write_parts
from batchrunner.send.batch.names import PartName, new_submission
from batchrunner.send.batch.service import BatchService, is_token_limit
from batchrunner.send.retry import RetryPolicy, wait_after

log = logging.getLogger("batchrunner")

#: Called with each batch created and the number of rows in it.
OnCreated = Callable[[Batch, int], None]


class Submitter:
    """Sends rows to *service* as batches of the output named *key*."""

    def __init__(
        self,
        service: BatchService,
        settings: Settings,
        *,
        key: str,
        results: str,
        time_left: Callable[[], float | None],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.service = service
        self.settings = settings
        self.key = key
        self.results = results
        self._time_left = time_left
        self._sleep = sleep
        #: Why rows were left for a later run (the enqueued-token quota is full).
        self.held_back: str | None = None

    async def rows_in(self, batches: Iterable[Batch]) -> set[str]:
        """
        The rows of *batches*, read from their input files on the service each
        time (a submit is rare; a run that only waits never needs them).
        """
        rows: set[str] = set()
        for batch in batches:
            with tempfile.TemporaryDirectory(prefix="batchrunner-input-") as folder:
                target = Path(folder) / "input.jsonl"
                await self.service.download(batch.input_file_id, target)
                with target.open("rb") as lines:
                    rows.update(custom_ids(lines))
        return rows

    async def submit(self, requests: Iterable[Request], on_created: OnCreated) -> None:
        """
        Write *requests* into input files (all of them before the first upload,
        so that bad input uploads nothing), then upload each and create its batch.
        """
        settings = self.settings
        assert settings.deployment
        with tempfile.TemporaryDirectory(prefix="batchrunner-submit-") as folder:
            parts = write_parts(
                requests,
                settings.deployment,
                Path(folder),
                max_requests=settings.batch_max_requests,
                max_bytes=settings.batch_max_bytes,
            )
            submission = new_submission()
            for part in parts:
                name = PartName(self.key, submission, part.number)
                uploaded = await self.service.upload(part.path, name.file_name)
                batch = await self._create(uploaded.id, name)
                if batch is None:
                    await self.service.delete_file(uploaded.id)
                    return
                on_created(batch, part.requests)

    async def _create(self, file_id: str, name: PartName) -> Batch | None:
        """
        The batch of *file_id*; None when the enqueued-token quota stays full
        (backing off 5, 10, 20 … s, within ``--deadline`` when one is set).
        """
        waits = token_limit_waits(self.settings.max_attempts, self._time_left())
        for wait in [*waits, None]:
            try:
                return await self._create_once(file_id, name)
            except ApiFailure as failure:
                if not is_token_limit(failure):
                    raise
                if wait is None:
                    self.held_back = (
                        "the enqueued-token quota of the deployment is full: the rows"
                        " left are submitted by a later run (should it stay full while"
                        " none of this output's batches runs, one input file may"
                        " need more than the whole quota: lower batch_max_requests)"
                    )
                    log.warning(self.held_back, extra={"event": "batch_quota_full"})
                    return None
                log.info(
                    "the enqueued-token quota is full; creating the batch again in"
                    " %.0f s", wait, extra={"event": "batch_token_limit", "wait": wait},
                )  # fmt: skip
                await self._sleep(wait)
        return None

    async def _create_once(self, file_id: str, name: PartName) -> Batch:
        """
        Create the batch, retrying timeouts and server faults; before each retry
        the list is checked, as the failed try may have created it after all.
        """
        settings = self.settings
        policy = RetryPolicy(settings.max_attempts, max_backoff=settings.max_backoff)
        assert settings.deployment
        metadata = name.metadata(self.results, settings.deployment)
        endpoint = batch_url(settings.api)
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return await self.service.create(file_id, endpoint, metadata)
            except ApiFailure as failure:
                if not failure.retryable or attempt == policy.max_attempts:
                    raise
                await self._sleep(wait_after(failure, attempt, policy))
                for batch in await self.service.batches_of(self.key):
                    if batch.input_file_id == file_id:
                        return batch
        raise AssertionError("unreachable: the last attempt raises")
