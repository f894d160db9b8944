"""
How this output's files and batches are named on the service, so that its own
lists (``files.list``, ``batches.list``) say which are ours after a crash.

Every input file is named ``batchrunner-<output key>-<submission>-<part>.jsonl``
and every batch carries the same three in its ``metadata``. The output key is
derived from the results path (and shard), so every run on the same output, from
any machine or directory, finds the same files and batches.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from batchrunner.azure.blob import is_blob_url

PREFIX = "batchrunner"
OUTPUT_KEY = "batchrunner_output"
SUBMISSION_KEY = "batchrunner_submission"
PART_KEY = "batchrunner_part"
#: The deployment the lines name: a refusal of another one is old news.
DEPLOYMENT_KEY = "batchrunner_deployment"
#: The results file, for a person reading the service's list (values: 512 chars).
RESULTS_KEY = "batchrunner_results"

_FILE_NAME = re.compile(rf"^{PREFIX}-([0-9a-f]{{16}})-([0-9a-f]+)-(\d+)\.jsonl$")


def output_key(output: str, shard: tuple[int, int] | None = None) -> str:
    """
    16 hex digits naming the results at *output* (a path or an az:// URL) for
    shard *shard*: the same for every run that writes there.
    """
    where = output if is_blob_url(output) else str(Path(output).resolve())
    if shard is not None:
        where += f"#{shard[0]}/{shard[1]}"
    return hashlib.sha256(where.encode("utf-8")).hexdigest()[:16]


def new_submission() -> str:
    """A fresh id for one run's submission of input files."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class PartName:
    """Which output, submission and part an input file or batch belongs to."""

    key: str
    submission: str
    part: int

    @property
    def file_name(self) -> str:
        """The name the input file is uploaded under."""
        return f"{PREFIX}-{self.key}-{self.submission}-{self.part:04d}.jsonl"

    def metadata(self, results: str, deployment: str) -> dict[str, str]:
        """The batch's ``metadata`` (at most 16 pairs, values up to 512 chars)."""
        return {
            OUTPUT_KEY: self.key,
            SUBMISSION_KEY: self.submission,
            PART_KEY: str(self.part),
            RESULTS_KEY: results[-512:],
            DEPLOYMENT_KEY: deployment[-512:],
        }


def parse_file_name(name: str | None) -> PartName | None:
    """The ``PartName`` in an uploaded file's *name*, or None when it is not ours."""
    match = _FILE_NAME.match(name or "")
    if match is None:
        return None
    return PartName(match[1], match[2], int(match[3]))


def is_ours(metadata: Mapping[str, str] | None, key: str) -> bool:
    """Whether a batch with *metadata* belongs to the output named *key*."""
    return bool(metadata) and metadata.get(OUTPUT_KEY) == key  # type: ignore[union-attr]
