"""
Pay once: identical requests share one answer, within a run and, with ``--cache DIR``,
across runs.

Within a run, at most one of a set of identical requests is in flight: the others
wait for its answer and reuse it (``reused: "duplicate"``, ``attempts: 0``). Only
answers that ended ``ok`` are shared or stored; a failed request leaves the next
identical row to try for itself. On disk, a request is identified by the SHA-256 of
its operation and whole body (canonical JSON, keys sorted), under a directory named
after the deployment.

To keep memory flat on large inputs, a run remembers an answer only while rows that
repeat its request are still to come: the validation pass counts repeats by the
hash of each request's ``run_key`` (``RepeatCounter``), 8 bytes a row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from batchrunner.config.settings import Settings
from batchrunner.errors import ConfigError
from batchrunner.prepare.identity import (
    RepeatCounter,
    canonical_json,
    request_digest,
    run_key,
    stable_hash,
)
from batchrunner.records import Reply, Request, RowResult, Usage, answered

log = logging.getLogger("batchrunner")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Bumped when the stored layout changes, so old files read as misses.
_FORMAT = 1
#: Re-exported: the cache and the in-run sharing key requests the same way.
__all__ = [
    "RepeatCounter",
    "ResponseCache",
    "Sharer",
    "open_cache",
    "request_digest",
    "run_key",
    "stable_hash",
]


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
            msg = (
                f"cache directory {directory!r} ({source}): {exc.strerror}; name a"
                " directory for --cache (it is made when missing)"
            )
            raise ConfigError(msg) from exc
        self._warned = False

    def path(self, digest: bytes) -> Path:
        """Where the answer to the request with *digest* is stored."""
        name = digest.hex()
        return self.root / name[:2] / f"{name}.json"

    def contains(self, digest: bytes) -> bool:
        """Whether an answer to *digest* is stored."""
        return self.path(digest).is_file()

    def has_answer(self, request: Request) -> bool:
        """Whether an answer to *request* is stored."""
        return self.contains(request_digest(request.api, request.body))

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
            text = canonical_json(entry)
            tmp.write_text(text, encoding="utf-8", errors="surrogatepass")
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
        self._memo: dict[Hashable, Reply] = {}
        self._flights: dict[Hashable, _Flight] = {}
        #: id of a request being sent → its run key and its cache digest.
        self._leading: dict[int, tuple[Hashable, bytes | None]] = {}

    async def before(self, request: Request) -> RowResult | None:
        """A result reusing an answer, or None when *request* must be sent."""
        key = run_key(request) if self.dedupe else None
        while self.dedupe:
            reply = self._memo.get(key)
            if reply is not None:
                self._served(key)
                return answered(request, reply, 0, reused="duplicate")
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.done.wait()
        if self.dedupe:
            # Claimed before the cache is read, so that no twin sends meanwhile.
            self._flights[key] = _Flight(anyio.Event())
        digest = None
        if self.cache is not None:
            digest = request_digest(request.api, request.body)
        self._leading[id(request)] = (key, digest)
        reply = await self._cached(digest)
        if reply is None:
            return None
        self._settle(request, reply)
        return answered(request, reply, 0, reused="cache")

    def after(self, request: Request, result: RowResult | None) -> RowResult | None:
        """Share and store *result* of a request that was sent; wake its twins."""
        reply = None
        if result is not None and result.reused is None and result.status == "ok":
            reply = result.reply
        lead = self._leading.get(id(request))
        if reply is not None and lead is not None and lead[1] is not None:
            assert self.cache is not None
            self.cache.store(lead[1], request, reply)
        self._settle(request, reply)
        return result

    async def _cached(self, digest: bytes | None) -> Reply | None:
        if self.cache is None or digest is None:
            return None
        return await anyio.to_thread.run_sync(self.cache.load, digest)

    def _settle(self, request: Request, reply: Reply | None) -> None:
        """End the lead of *request*: remember *reply* for repeats, wake waiters."""
        lead = self._leading.pop(id(request), None)
        if lead is None or not self.dedupe:
            return
        key = lead[0]
        if reply is not None and self._left.get(stable_hash(key), 0) > 1:
            self._memo[key] = reply
        self._served(key)
        flight = self._flights.pop(key, None)
        if flight is not None:
            flight.done.set()

    def _served(self, key: Hashable) -> None:
        """One row of *key* answered: forget the answer after the last one."""
        counted = stable_hash(key)
        left = self._left.get(counted, 1) - 1
        if left > 0:
            self._left[counted] = left
            return
        self._left.pop(counted, None)
        self._memo.pop(key, None)
