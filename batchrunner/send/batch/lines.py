"""
Prepared requests as Batch API input files: one JSON line a request, split into
files within the service's limits (requests and bytes a file), streamed to disk.

A line is what the online path would send for the row, addressed to the Batch
API: ``{"custom_id": <row id>, "method": "POST", "url": "/chat/completions",
"body": {"model": <deployment>, ...}}``. Files are UTF-8 without a byte order
mark (with one, the service cannot find the deployment).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from batchrunner.errors import ConfigError
from batchrunner.records import Api, Request

#: The Batch API's ``url`` (and the batch's ``endpoint``) of each operation.
BATCH_URLS = {Api.CHAT: "/chat/completions", Api.COMPLETIONS: "/completions"}


def batch_url(api: Api) -> str:
    """The Batch API ``url`` of *api*; a ``ConfigError`` for embeddings."""
    url = BATCH_URLS.get(api)
    if url is None:
        msg = (
            f"--mode batch cannot send --api {api.value}: Azure OpenAI's Batch API"
            " does not support embeddings; use --mode online for them"
        )
        raise ConfigError(msg)
    return url


def _json(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: its \ud800 escape is valid JSON
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def input_line(request: Request, deployment: str) -> bytes:
    """The Batch API input line of *request* to *deployment*, newline included."""
    body = {"model": deployment, **request.body}
    line = {
        "custom_id": request.row_id,
        "method": "POST",
        "url": batch_url(request.api),
        "body": body,
    }
    return _json(line) + b"\n"


@dataclass(frozen=True)
class Part:
    """One input file, written: where, its 1-based number, and what it holds."""

    path: Path
    number: int
    requests: int
    bytes: int


class PartWriter:
    """
    Writes lines into ``part-0001.jsonl``, ``part-0002.jsonl`` … in *folder*,
    starting a new file before one would pass *max_requests* or *max_bytes*.
    """

    def __init__(self, folder: Path, *, max_requests: int, max_bytes: int) -> None:
        self.folder = folder
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.parts: list[Part] = []
        self._file: BinaryIO | None = None
        self._requests = 0
        self._bytes = 0

    def add(self, row_id: str, line: bytes) -> None:
        """Append *line* (row *row_id*'s) to the current file, or to a new one."""
        if len(line) > self.max_bytes:
            msg = (
                f"row {row_id!r}: its batch request is {len(line):,} bytes, more than"
                f" one input file may hold ({self.max_bytes:,}, batch_max_bytes):"
                " shorten its prompt, raise batch_max_bytes (the service takes up to"
                " 200 MB), or send it with --mode online"
            )
            raise ConfigError(msg)
        full = self._requests >= self.max_requests
        if self._file is None or full or self._bytes + len(line) > self.max_bytes:
            self._next_file()
        assert self._file is not None
        self._file.write(line)
        self._requests += 1
        self._bytes += len(line)

    def _next_file(self) -> None:
        self._close_file()
        number = len(self.parts) + 1
        path = self.folder / f"part-{number:04d}.jsonl"
        self._file = path.open("wb")
        self.parts.append(Part(path, number, 0, 0))
        self._requests = self._bytes = 0

    def _close_file(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        last = self.parts[-1]
        self.parts[-1] = Part(last.path, last.number, self._requests, self._bytes)

    def close(self) -> list[Part]:
        """Finish the last file; the parts written, in order."""
        self._close_file()
        return self.parts


def write_parts(
    requests: Iterable[Request],
    deployment: str,
    folder: Path,
    *,
    max_requests: int,
    max_bytes: int,
) -> list[Part]:
    """*requests* as input files in *folder*, each within the limits."""
    writer = PartWriter(folder, max_requests=max_requests, max_bytes=max_bytes)
    try:
        for request in requests:
            writer.add(request.row_id, input_line(request, deployment))
    finally:
        parts = writer.close()
    return parts


#: How the lines we write begin; a line written otherwise is parsed whole.
_HEAD = re.compile(rb'^\{"custom_id":("(?:[^"\\]|\\.)*")')


def custom_id(line: bytes) -> str | None:
    """The ``custom_id`` of an input or output *line*; None for a blank line."""
    match = _HEAD.match(line)
    if match is not None:
        return str(json.loads(match[1]))
    if not line.strip():
        return None
    value = json.loads(line).get("custom_id")
    return None if value is None else str(value)


def custom_ids(lines: Iterable[bytes]) -> Iterator[str]:
    """The ``custom_id`` of each line of an input file (blank lines skipped)."""
    for line in lines:
        found = custom_id(line)
        if found is not None:
            yield found
