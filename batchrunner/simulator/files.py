"""
The Files API: uploads kept on disk (a batch input may be 200 MB), retrieved,
listed newest first, deleted, and their content served as uploaded.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import BodyPartReader, web

from batchrunner.simulator.config import Json, SimConfig
from batchrunner.simulator.service import Outcome, invalid, limit_of, not_found, page
from batchrunner.simulator.wire import _json_answer

PURPOSES = ("batch", "batch_output", "fine-tune", "assistants", "user_data", "evals")

#: Azure keeps an uploaded file with an expiry for 14 to 30 days.
EXPIRY_SECONDS = (1_209_600, 2_592_000)

_CHUNK = 1 << 16


@dataclass(frozen=True)
class StoredFile:
    """One file of the store, its bytes at *path*."""

    id: str
    filename: str
    purpose: str
    created_at: int
    size: int
    path: Path
    expires_at: int | None = None

    def to_json(self) -> Json:
        """The file object as the service answers it."""
        answer: Json = {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }
        if self.expires_at is not None:
            answer["expires_at"] = self.expires_at
        return answer


class FileStore:
    """The files of one simulator, in a temporary directory made on first use."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self.files: dict[str, StoredFile] = {}

    def reserve(self) -> tuple[str, Path]:
        """A new file id and the path to write its bytes to."""
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="batchrunner-simulator-"))
        file_id = "file-" + uuid.uuid4().hex
        return file_id, self._root / file_id

    def add(self, stored: StoredFile) -> StoredFile:
        self.files[stored.id] = stored
        return stored

    def add_written(
        self,
        file_id: str,
        path: Path,
        filename: str,
        expires_after: int | None = None,
    ) -> StoredFile:
        """Store a batch's output file, already written to *path*."""
        size, now = path.stat().st_size, int(time.time())
        expires_at = None if expires_after is None else now + expires_after
        return self.add(
            StoredFile(file_id, filename, "batch_output", now, size, path, expires_at)
        )

    def remove(self, file_id: str) -> None:
        stored = self.files.pop(file_id)
        # A batch reading it keeps its open handle: POSIX keeps the bytes for it.
        stored.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove every file and the directory."""
        self.files.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


def expiry(anchor: object, seconds: object, name: str) -> int | str | None:
    """The seconds an ``expires_after`` asks for, None for none, or what is wrong."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        return f"{name}[anchor] must be 'created_at'."
    low, high = EXPIRY_SECONDS
    if isinstance(seconds, str) and seconds.isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int) or not low <= seconds <= high:
        return f"{name}[seconds] must be an integer from {low} to {high}."
    return seconds


async def _write(part: BodyPartReader, path: Path, limit: int) -> int | None:
    """Stream the part to *path*; its size, or None when over *limit* bytes."""
    size = 0
    with path.open("wb") as out:
        while chunk := await part.read_chunk(_CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            out.write(chunk)
    return size


@dataclass
class _Upload:
    fields: dict[str, str]
    filename: str | None = None
    size: int = 0


async def _receive(request: web.Request, path: Path, max_bytes: int) -> _Upload | str:
    """The form's fields with the file streamed to *path*, or what is wrong."""
    upload = _Upload({})
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name != "file":
            upload.fields[part.name] = await part.text()
            continue
        upload.filename = part.filename or "file"
        size = await _write(part, path, max_bytes)
        if size is None:
            return f"The file is larger than the limit of {max_bytes} bytes."
        upload.size = size
    return _check_upload(upload.fields, upload.filename) or upload


def _over_file_limit(
    store: FileStore, purpose: str, expires: bool, limits: tuple[int, int]
) -> str | None:
    if purpose != "batch":
        return None
    kept = sum(
        1
        for f in store.files.values()
        if f.purpose == "batch" and (f.expires_at is not None) == expires
    )
    without, with_expiry = limits
    limit = with_expiry if expires else without
    if kept < limit:
        return None
    advice = (
        ""
        if expires
        else (f", or upload with expires_after to be allowed {with_expiry}")
    )
    return (
        f"The resource already has {kept} files with purpose 'batch', the most it"
        f" may keep{' with an expiry' if expires else ''}. Delete files you no"
        f" longer need{advice}."
    )


async def upload(request: web.Request, store: FileStore, config: SimConfig) -> Outcome:
    """``POST /files``: multipart ``purpose``, ``file``, optional ``expires_after``."""
    if not request.content_type.startswith("multipart/"):
        return invalid("The request must be multipart/form-data.")
    file_id, path = store.reserve()
    kept = False
    try:
        received = await _receive(request, path, config.batch_max_file_bytes)
        if isinstance(received, str):
            return invalid(received)
        fields, now = received.fields, int(time.time())
        anchor = fields.get("expires_after[anchor]")
        seconds = expiry(anchor, fields.get("expires_after[seconds]"), "expires_after")
        if isinstance(seconds, str):
            return invalid(seconds, "expires_after")
        expires_at = None if seconds is None else now + seconds
        full = _over_file_limit(
            store, fields["purpose"], seconds is not None, config.batch_max_files
        )
        if full is not None:
            return invalid(full, "file")
        filename, purpose = received.filename or "file", fields["purpose"]
        stored = StoredFile(
            file_id, filename, purpose, now, received.size, path, expires_at
        )
        kept = True
        return _json_answer(200, store.add(stored).to_json())
    finally:
        if not kept:
            path.unlink(missing_ok=True)


def _check_upload(fields: dict[str, str], filename: str | None) -> str | None:
    purpose = fields.get("purpose")
    if purpose is None:
        return "Missing required parameter: 'purpose'."
    if purpose not in PURPOSES:
        known = ", ".join(PURPOSES)
        return f"'{purpose}' is not a valid purpose; expected one of {known}."
    if filename is None:
        return "Missing required parameter: 'file'."
    return None


def listing(request: web.Request, store: FileStore) -> Outcome:
    """``GET /files``, newest first unless ``order=asc``; ``purpose`` filters."""
    limit = limit_of(request, 10_000, 10_000)
    if not isinstance(limit, int):
        return limit
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        return invalid("order must be 'asc' or 'desc'.", "order")
    purpose = request.query.get("purpose")
    files = [f for f in store.files.values() if purpose in (None, f.purpose)]
    if order == "desc":
        files.reverse()
    items = [f.to_json() for f in files]
    return _json_answer(200, page(items, request.query.get("after"), limit))


def retrieve(store: FileStore, file_id: str) -> Outcome:
    stored = store.files.get(file_id)
    return (
        not_found("file", file_id)
        if stored is None
        else _json_answer(200, stored.to_json())
    )


def delete(store: FileStore, file_id: str) -> Outcome:
    if file_id not in store.files:
        return not_found("file", file_id)
    store.remove(file_id)
    return _json_answer(200, {"id": file_id, "object": "file", "deleted": True})


def content(store: FileStore, file_id: str) -> Outcome:
    stored = store.files.get(file_id)
    if stored is None:
        return not_found("file", file_id)
    with contextlib.suppress(OSError):
        if stored.path.stat().st_size == stored.size:
            return stored.path
    return not_found("file", file_id)
