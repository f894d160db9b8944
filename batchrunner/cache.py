"""
Pay once: identical requests share one answer, within a run and, with ``--cache DIR``,
across runs.

A request is identified by the SHA-256 of its operation and body (canonical JSON, keys
sorted); the on-disk cache adds the deployment as a directory. Within a run, at most
one of a set of identical requests is in flight: the others wait for its answer and
reuse it (``reused: "duplicate"``, ``attempts: 0``). Only answers that ended ``ok`` are
shared or stored; a failed request leaves the next identical row to try for itself.

To keep memory flat on large inputs, a run remembers an answer only while rows that
repeat its request are still to come: the validation pass counts repeats by an 8-byte
prefix of each digest (``RepeatCounter``), 8 bytes a row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from batchrunner.errors import ConfigError
from batchrunner.records import Api, Reply, Request, RowResult, Usage
from batchrunner.settings import Settings

log = logging.getLogger("batchrunner")

_ENCODE = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
).encode
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Bumped when the stored layout changes, so old files read as misses.
_FORMAT = 1


def request_digest(api: Api, body: Mapping[str, Any]) -> bytes:
    """The SHA-256 that identifies a request by its operation and body."""
    text = _ENCODE([api.value, body])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _prefix(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


class RepeatCounter:
    """Counts requests by digest prefix as they are built, to find the repeats."""

    def __init__(self) -> None:
        self._prefixes = array("Q")

    def add(self, request: Request) -> None:
        """Count *request*."""
        self._prefixes.append(_prefix(request_digest(request.api, request.body)))

    def repeats(self) -> dict[int, int]:
        """Digest prefix → how many requests share it, for those seen more than once."""
        if not self._prefixes:
            return {}
        values, counts = np.unique(
            np.frombuffer(self._prefixes, dtype=np.uint64), return_counts=True
        )
        shared = counts > 1
        return dict(zip(values[shared].tolist(), counts[shared].tolist(), strict=True))


class ResponseCache:
    """
    Answers on disk: ``<dir>/<deployment>/<2 hex>/<64 hex>.json``, one per request.

    Files are written whole (a temporary file renamed into place), so replicas and
    killed runs never leave a torn one; an unreadable file is a miss.
    """

    def __init__(
        self, directory: str, deployment: str, *, source: str, create: bool = True
    ) -> None:
        name = deployment if _SAFE_NAME.match(deployment) else _hashed(deployment)
        self.root = Path(directory) / name
        try:
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
            elif Path(directory).exists() and not Path(directory).is_dir():
                raise NotADirectoryError(20, "not a directory")
        except OSError as exc:
            msg = f"cache directory {directory!r} ({source}): {exc.strerror}"
            raise ConfigError(msg) from exc
        self._warned = False

    def path(self, digest: bytes) -> Path:
        """Where the answer to the request with *digest* is stored."""
        name = digest.hex()
        return self.root / name[:2] / f"{name}.json"

    def contains(self, digest: bytes) -> bool:
        """Whether an answer to *digest* is stored."""
        return self.path(digest).is_file()

    def load(self, digest: bytes) -> Reply | None:
        """The stored answer to *digest*, or None."""
        path = self.path(digest)
        try:
            data = json.loads(path.read_bytes())
            return _reply_from(data["reply"]) if data["format"] == _FORMAT else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: unreadable cache entry (%s); sending instead", path, exc)
            return None

    def store(self, digest: bytes, request: Request, reply: Reply) -> None:
        """Keep *reply* as the answer to *request*; a failure is only a warning."""
        path = self.path(digest)
        entry = {
            "format": _FORMAT,
            "request": {"api": request.api.value, "body": request.body},
            "reply": _reply_data(reply),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(exist_ok=True)
            tmp.write_text(_ENCODE(entry), encoding="utf-8", errors="surrogatepass")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if not self._warned:
                self._warned = True
                log.warning("cannot write to the cache %s: %s", self.root, exc)


def open_cache(settings: Settings, *, create: bool = True) -> ResponseCache | None:
    """The ``--cache`` of *settings* for its deployment, or None when not asked for."""
    if not settings.cache or not settings.deployment:
        return None
    source = settings.sources.get("cache", "default")
    return ResponseCache(
        settings.cache, settings.deployment, source=source, create=create
    )


def _hashed(name: str) -> str:
    return "deployment-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def _reply_data(reply: Reply) -> dict[str, Any]:
    return {
        "output": reply.output,
        "embedding": reply.embedding,
        "finish_reason": reply.finish_reason,
        "usage": reply.usage.as_dict(),
        "model": reply.model,
        "request_id": reply.request_id,
        "latency_ms": reply.latency_ms,
    }


def _reply_from(data: Mapping[str, Any]) -> Reply:
    return Reply(
        output=data["output"],
        embedding=data["embedding"],
        finish_reason=data["finish_reason"],
        usage=Usage(**data["usage"]),
        model=data["model"],
        request_id=data["request_id"],
        latency_ms=int(data["latency_ms"]),
    )


@dataclass
class _Flight:
    """One request in flight that identical ones wait for."""

    done: anyio.Event


class Sharer:
    """
    Reuses answers for identical requests: from this run (*dedupe*) and from *cache*.

    *repeats* (from ``RepeatCounter``) says which requests occur more than once; only
    their answers are kept in memory, and only until their last repeat is served.
    """

    def __init__(
        self,
        *,
        dedupe: bool,
        repeats: Mapping[int, int] | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.dedupe = dedupe
        self.cache = cache
        self._left = dict(repeats or {})
        self._memo: dict[bytes, Reply] = {}
        self._flights: dict[bytes, _Flight] = {}
        self._leading: dict[int, tuple[bytes, Request]] = {}

    async def before(self, request: Request) -> RowResult | None:
        """A result reusing an answer, or None when *request* must be sent."""
        digest = request_digest(request.api, request.body)
        while self.dedupe:
            reply = self._memo.get(digest)
            if reply is not None:
                self._served(digest)
                return _reused(request, reply, "duplicate")
            flight = self._flights.get(digest)
            if flight is None:
                break
            await flight.done.wait()
        if self.dedupe:
            # Claimed before the cache is read, so that no twin sends meanwhile.
            self._flights[digest] = _Flight(anyio.Event())
        self._leading[id(request)] = (digest, request)
        reply = await self._cached(digest)
        if reply is None:
            return None
        self._settle(request, reply)
        return _reused(request, reply, "cache")

    def after(self, request: Request, result: RowResult | None) -> RowResult | None:
        """Share and store *result* of a request that was sent; wake its twins."""
        if result is not None and result.reused is None:
            ok = result.status == "ok" and result.reply is not None
            reply = result.reply if ok else None
            if reply is not None and self.cache is not None:
                digest, _ = self._leading.get(id(request), (None, request))
                if digest is not None:
                    self.cache.store(digest, request, reply)
            self._settle(request, reply)
        else:
            self._settle(request, None)
        return result

    async def _cached(self, digest: bytes) -> Reply | None:
        if self.cache is None:
            return None
        return await anyio.to_thread.run_sync(self.cache.load, digest)

    def _settle(self, request: Request, reply: Reply | None) -> None:
        """End the lead of *request*: remember *reply* for repeats, wake waiters."""
        lead = self._leading.pop(id(request), None)
        if lead is None:
            return
        digest = lead[0]
        if self.dedupe:
            if reply is not None and self._left.get(_prefix(digest), 0) > 1:
                self._memo[digest] = reply
            self._served(digest)
        flight = self._flights.pop(digest, None)
        if flight is not None:
            flight.done.set()

    def _served(self, digest: bytes) -> None:
        """One row of *digest* answered: forget the answer after the last one."""
        key = _prefix(digest)
        left = self._left.get(key, 1) - 1
        if left > 0:
            self._left[key] = left
            return
        self._left.pop(key, None)
        self._memo.pop(digest, None)


def _reused(request: Request, reply: Reply, how: str) -> RowResult:
    return RowResult(
        id=request.row_id,
        status="ok",
        reply=reply,
        error=None,
        attempts=0,
        latency_ms=None,
        request_id=reply.request_id,
        passthrough=request.passthrough,
        reused=how,
    )
