"""
The job's input side: the input as a file that can be read twice, validated
once, and read again for the rows a run sends (its shard, its limit, less the
rows already done).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from batchrunner.config.locations import is_blob_url, parse_blob_url
from batchrunner.config.settings import Settings, environment
from batchrunner.errors import InputError
from batchrunner.prepare.builder import RequestBuilder
from batchrunner.prepare.identity import RepeatCounter
from batchrunner.prepare.plan import select
from batchrunner.prepare.tokens import TokenCounter
from batchrunner.prepare.validate import validate
from batchrunner.records import Request
from batchrunner.rows.reader import open_rows, spool_stdin
from batchrunner.rows.stamp import Validated, input_stamp, recall, remember

log = logging.getLogger("batchrunner")


@dataclass(frozen=True)
class Source:
    """The input file to read, and the name to show for it in messages."""

    path: str
    name: str

    def requests(self, settings: Settings, done: AbstractSet[str]) -> Iterator[Request]:
        """The requests of the rows *settings* plan to send, less those in *done*."""
        counter = counter_for(settings)
        builder = RequestBuilder(settings, path=self.name, counter=counter)
        rows = open_rows(self.path, settings.input, name=self.name)
        for row in select(rows, shard=settings.shard, limit=settings.limit, done=done):
            yield builder.build(row)

    def row_columns(self, settings: Settings) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every row's id and the columns its record carries through."""
        builder = RequestBuilder(settings, path=self.name)
        for row in open_rows(self.path, settings.input, name=self.name):
            yield row.id, builder.columns(row)

    def count(
        self, settings: Settings, done: AbstractSet[str], rows: int
    ) -> tuple[int, int]:
        """(rows to send, rows skipped as already done) under the shard and limit."""
        if settings.shard is None and settings.limit is None and len(done) <= rows:
            # Every done id came from this input: no need to read it again to count.
            return rows - len(done), len(done)
        planned = skipped = 0
        every = open_rows(self.path, settings.input, name=self.name)
        for row in select(every, shard=settings.shard, limit=settings.limit):
            if row.id in done:
                skipped += 1
            else:
                planned += 1
        return planned, skipped


@contextlib.contextmanager
def open_source(
    input_arg: str,
    *,
    account: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[Source]:
    """The input as a file that can be read twice (stdin and blobs are copied)."""
    if is_blob_url(input_arg):
        from batchrunner.azure.blob import fetched_input  # the storage SDK

        with fetched_input(input_arg, account, environ or environment()) as path:
            yield Source(path=str(path), name=str(parse_blob_url(input_arg)))
        return
    if input_arg != "-":
        yield Source(path=input_arg, name=input_arg)
        return
    if sys.stdin.isatty():
        # Nothing is piped in: reading would wait for typing that never comes.
        problem = (
            "'-' reads JSONL from stdin, and stdin is a terminal; pipe a file in,"
            " like: python -m batchrunner - < prompts.jsonl"
        )
        raise InputError("<stdin>", None, None, problem)
    spooled = spool_stdin(sys.stdin.buffer)
    try:
        yield Source(path=str(spooled), name="<stdin>")
    finally:
        spooled.unlink(missing_ok=True)


def validated(source: Source, settings: Settings, input_arg: str) -> Validated:
    """
    Check every row before anything is sent, counting repeated requests (for
    pay-once); an input that already passed, unchanged, is not read again.
    """
    stamp = None if input_arg == "-" else input_stamp(source.path, settings)
    counting = settings.dedupe and not settings.dry_run
    if stamp is not None and not settings.fresh:
        known = recall(stamp)
        # A file remembered with no rows is read again, to be refused (older
        # versions let an empty input by).
        usable = known is not None and known.rows > 0
        if known is not None and usable and (known.repeats is not None or not counting):
            log.debug("input unchanged since it was validated: %d rows", known.rows)
            return known
    counter = RepeatCounter() if counting else None
    observe = counter.add if counter is not None else None
    checked = validate(source.path, settings, name=source.name, observe=observe)
    log.debug("input ok: %d rows", checked.rows)
    found = Validated(checked.rows, counter.repeats() if counter is not None else None)
    if stamp is not None and not settings.dry_run:
        remember(stamp, found)
    return found


def counter_for(settings: Settings) -> TokenCounter:
    """
    Exact counts where a figure depends on them (--tpm, --max-cost, --dry-run);
    otherwise the four-characters-a-token estimate, which keeps the tokenizer's
    second of start-up and ~100 MB out of runs that only pace to learned limits
    (Azure's own limiter estimates from characters too).
    """
    exact = settings.dry_run or settings.tpm or settings.max_cost
    return TokenCounter(settings.model or settings.deployment if exact else None)
