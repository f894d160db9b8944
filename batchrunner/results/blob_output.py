"""
A results blob (``az://…``), leased for the run, resumed from and streamed to a
local copy (``mirror``). A module of its own so that the storage SDK loads only
for runs whose results are blobs.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobClient, BlobLeaseClient

from batchrunner.azure.blob import (
    BlobLocation,
    blob_client,
    download,
    parse_blob_url,
    storage_errors,
    upload_file,
)
from batchrunner.errors import Resumable
from batchrunner.results.destination import append_target
from batchrunner.results.layout import summary_path, write_summary
from batchrunner.results.mirror import BlobMirror, release, take_lease

#: How long ``--fresh`` waits for Storage to copy the earlier results aside.
COPY_WAIT_SECONDS = 600


class BlobOutput:
    """A results blob (az://…), leased, resumed from and streamed to a local copy."""

    def __init__(
        self,
        target: str,
        *,
        fresh: bool,
        account: str | None,
        environ: Mapping[str, str],
    ) -> None:
        self.location = parse_blob_url(target)
        self.shown = str(self.location)
        self.backups: list[str] = []
        self._account, self._environ = account, environ
        self._folder = Path(tempfile.mkdtemp(prefix="batchrunner-output-"))
        self.path = self._folder / self.location.name
        self._mirror: BlobMirror | None = None
        try:
            self._open(fresh)
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def _client(self, name: str) -> BlobClient:
        return blob_client(self.location.with_name(name), self._account, self._environ)

    def _open(self, fresh: bool) -> None:
        local = append_target(self.path)
        client = self._client(local.name)
        shown = str(self.location.with_name(local.name))
        self._lease: BlobLeaseClient | None = take_lease(client, shown)
        try:
            with storage_errors(f"reading {self.shown}"):
                if fresh:
                    self._start_over(client)
                shipped = _fetch(client, local, self._lease)
                if local != self.path:  # Parquet: the last rendered file, if any
                    _fetch(self._client(self.path.name), self.path, None)
            renewer = BlobLeaseClient(self._client(local.name), self._lease.id)
            self._mirror = BlobMirror(
                client,
                local,
                self._lease,
                renewer=renewer,
                shipped=shipped,
                shown=shown,
            )
        except BaseException:
            release(self._lease, shown)
            raise

    def _start_over(self, appended: BlobClient) -> None:
        """``--fresh``: copy the results, Parquet file and summary aside, then empty."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        ours = append_target(self.path).name
        for name in dict.fromkeys([ours, self.path.name, summary_path(self.path).name]):
            source = self._client(name)
            if not source.exists():
                continue
            if name == ours and not source.get_blob_properties().size:
                continue  # created empty when it was leased: nothing to keep
            backup = self.location.with_name(f"{name}.bak-{stamp}")
            _copy(source, self._client(backup.name))
            self.backups.append(str(backup))
            if name != ours:
                source.delete_blob()
        appended.create_append_blob(lease=self._lease)

    def sync(self) -> None:
        """Hand what the sink wrote to the uploading thread."""
        if self._mirror is not None:
            self._mirror.sync()

    def finish(self, summary: dict[str, Any]) -> None:
        """Ship the last rows, then the rendered Parquet file and the summary."""
        if self._mirror is not None:
            mirror, self._mirror = self._mirror, None
            mirror.close()
        summary_file = summary_path(self.path)
        write_summary(summary_file, summary)
        with storage_errors(f"storing the summary of {self.shown}"):
            if append_target(self.path) != self.path and self.path.exists():
                upload_file(self._client(self.path.name), self.path)
            upload_file(self._client(summary_file.name), summary_file)

    def close(self) -> None:
        """Ship what is left (if ``finish`` was not reached), release, clean up."""
        if self._mirror is not None:
            mirror, self._mirror = self._mirror, None
            with contextlib.suppress(Exception):
                mirror.close()  # best effort on the way out of a failed run
        if self._lease is not None:
            lease, self._lease = self._lease, None
            release(lease, self.shown)
        shutil.rmtree(self._folder, ignore_errors=True)


def _copy(source: BlobClient, target: BlobClient) -> None:
    """Copy *source* to *target* inside the account, waiting until the copy is done."""
    target.start_copy_from_url(source.url)
    deadline = time.monotonic() + COPY_WAIT_SECONDS
    while (copy := target.get_blob_properties().copy).status == "pending":
        if time.monotonic() > deadline:
            msg = f"copying {source.blob_name} aside took too long; try again"
            raise Resumable(msg)
        time.sleep(0.5)  # Storage has no way to wait for a copy but asking
    if copy.status not in (None, "success"):
        msg = f"copying {source.blob_name} aside failed ({copy.status_description})"
        raise Resumable(msg)


def _fetch(client: BlobClient, path: Path, lease: BlobLeaseClient | None) -> int:
    """Download the blob to *path* if it exists; return the bytes fetched."""
    if lease is None and not client.exists():
        return 0
    return download(client, path)


@contextlib.contextmanager
def peek_blob(
    target: str, *, account: str | None, environ: Mapping[str, str]
) -> Iterator[Path]:
    """A local copy of blob *target*'s results and summary to read, unleased."""
    location: BlobLocation = parse_blob_url(target)
    folder = Path(tempfile.mkdtemp(prefix="batchrunner-peek-"))
    try:
        path = folder / location.name
        with storage_errors(f"reading {location}"):
            names = [append_target(path), path, summary_path(path)]
            for local in dict.fromkeys(names):
                client = blob_client(location.with_name(local.name), account, environ)
                _fetch(client, local, None)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
