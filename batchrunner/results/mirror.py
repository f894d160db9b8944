"""
A results blob kept in step with a local file: what the sinks append locally is
shipped to an Append Blob, about once a second, by a thread of its own.

The local file is the one the sinks in ``writer`` write and repair, so blob
outputs get exactly the torn-tail handling and formats of local ones. A lease on
the blob, renewed while the run lives, keeps a second run out; ``kill -9`` lets
it lapse within ``LEASE_SECONDS``.

Appends carry the offset they expect (``appendpos``), so an append the SDK
retries after a lost response is not written twice. An Append Blob takes at most
50,000 appends: close to that, the blob is rewritten from the local file in
large blocks.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from pathlib import Path

from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobType

from batchrunner.azure.blob import read_chunks, storage_errors
from batchrunner.errors import OutputBusy, Resumable, UsageError

log = logging.getLogger("batchrunner.azure.blob")

#: The lease a run holds on its results blob (Storage allows 15-60 s).
LEASE_SECONDS = 15
#: Seconds between appends: an Append Blob takes at most 50,000 of them.
FLUSH_SECONDS = 1.0
#: Committed blocks past which the blob is rewritten in large blocks.
BLOCK_LIMIT = 49_000


def take_lease(client: BlobClient, shown: str) -> BlobLeaseClient:
    """
    Create the Append Blob if missing, and lease it; refuse when another run holds it.
    """
    with storage_errors(f"opening {shown}"):
        with contextlib.suppress(ResourceExistsError):  # there: a run to resume
            client.create_append_blob(if_none_match="*")
        lease = BlobLeaseClient(client)
        try:
            lease.acquire(lease_duration=LEASE_SECONDS)
        except ResourceExistsError:
            msg = (
                f"{shown} is being written by another batchrunner run (it holds the"
                " blob's lease); wait for it to finish, or choose another --output."
                f" A run that was killed lets go within {LEASE_SECONDS} s"
            )
            raise OutputBusy(msg) from None
        kind = client.get_blob_properties(lease=lease).blob_type
    if kind != BlobType.APPENDBLOB:
        lease.release()
        msg = (
            f"{shown} is a {kind} blob, not an Append Blob that results can stream"
            " to; choose another --output, or move that blob away"
        )
        raise UsageError(msg)
    return lease


class BlobMirror:
    """Ships what is appended to *local* to the leased Append Blob *client*."""

    def __init__(
        self,
        client: BlobClient,
        local: Path,
        lease: BlobLeaseClient,
        *,
        renewer: BlobLeaseClient | None = None,
        shipped: int,
        shown: str,
        flush_seconds: float = FLUSH_SECONDS,
        block_limit: int = BLOCK_LIMIT,
    ) -> None:
        self.client = client
        self.local = local
        self.lease = lease
        # Renewed through a client of its own: the SDK's clients are not meant to
        # be shared between threads.
        self.renewer = renewer or lease
        self.shown = shown
        self.flush_seconds = flush_seconds
        self.block_limit = block_limit
        #: Bytes of the local file the blob holds.
        self.shipped = shipped
        self._target = shipped
        self._rewrite = False
        self._stopping = False
        self._failure: str | None = None
        self._wake = threading.Condition()
        # Each thread runs in a copy of this context: its log lines are the run's.
        self._threads = [
            threading.Thread(
                target=contextvars.copy_context().run,
                args=(loop,),
                name=name,
                daemon=True,
            )
            for loop, name in (
                (self._ship_loop, "blob-append"),
                (self._renew_loop, "blob-lease"),
            )
        ]
        for thread in self._threads:
            thread.start()

    def sync(self) -> None:
        """Note what the sink has written so far; raise if shipping has failed."""
        size = self.local.stat().st_size
        with self._wake:
            self._raise_failure()
            if size < self._target:
                self._rewrite = True  # the sink cut off a torn tail
            self._target = size
            self._wake.notify_all()

    def close(self) -> None:
        """Ship the rest and stop; raise if some of it could not be shipped."""
        self.sync()
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join()
        with self._wake:
            self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            msg = (
                f"{self.shown}: results could not be stored ({self._failure});"
                " rows not stored are sent again by the next run"
            )
            raise Resumable(msg)

    # --- the appending thread -----------------------------------------------------

    def _ship_loop(self) -> None:
        last = 0.0
        while True:
            with self._wake:
                while not self._pending() and not self._stopping:
                    self._wake.wait()
                # Gather a second's worth of rows into one append.
                due = last + self.flush_seconds
                while not self._stopping and (left := due - time.monotonic()) > 0:
                    self._wake.wait(left)
                if not self._pending():
                    return
                target, rewrite = self._target, self._rewrite
                self._rewrite = False
            last = time.monotonic()
            try:
                blocks = self._rewrite_all(target) if rewrite else self._append(target)
            except Exception as exc:  # the run must hear of any failure
                self._fail(exc)
                return
            if blocks >= self.block_limit:
                with self._wake:
                    self._rewrite = True

    def _pending(self) -> bool:
        return self._failure is None and (self._rewrite or self._target > self.shipped)

    def _append(self, target: int) -> int:
        blocks = 0
        for chunk in read_chunks(self.local, self.shipped, target):
            try:
                reply = self.client.append_block(
                    chunk, lease=self.lease, appendpos_condition=self.shipped
                )
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) != "AppendPositionConditionNotMet":
                    raise
                # A retried append whose first try had landed: check, then go on.
                size = self.client.get_blob_properties(lease=self.lease).size
                if size != self.shipped + len(chunk):
                    raise
                reply = {}
            self.shipped += len(chunk)
            blocks = int(str(reply.get("blob_committed_block_count") or 0))
        return blocks

    def _rewrite_all(self, target: int) -> int:
        log.info(
            "rewriting %s from its local copy in large blocks",
            self.shown,
            extra={"event": "blob_rewrite", "bytes": target},
        )
        self.client.create_append_blob(lease=self.lease)
        self.shipped = 0
        return self._append(target)

    def _fail(self, exc: Exception) -> None:
        code = getattr(exc, "error_code", None) or type(exc).__name__
        with self._wake:
            self._failure = str(code)
            self._wake.notify_all()
        log.error(
            "%s: storing results failed: %s",
            self.shown,
            code,
            extra={"event": "storage_failed"},
        )

    # --- the lease -------------------------------------------------------------

    def _renew_loop(self) -> None:
        # Its own thread: an append waiting out Storage's retries must not let the
        # lease lapse.
        while True:
            with self._wake:
                self._wake.wait_for(
                    lambda: self._stopping or self._failure is not None,
                    timeout=LEASE_SECONDS / 3,
                )
                if self._stopping or self._failure is not None:
                    return
            try:
                self.renewer.renew()
            except Exception as exc:  # a lost lease means another writer may be on
                self._fail(exc)
                return


def release(lease: BlobLeaseClient, shown: str) -> None:
    """Let go of *lease*; a failure only delays the next run by the lease's life."""
    try:
        with storage_errors(f"releasing {shown}"):
            lease.release()
    except Exception as exc:  # the run is over: report, but do not fail it
        log.warning("%s: could not release the lease: %s", shown, exc)
