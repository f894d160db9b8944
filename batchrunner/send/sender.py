"""
The sending stage's seam: the job hands a ``SendPlan`` to a ``Sender`` and gets
back how sending ended. The online pool (one request a row) is one sender; Batch
API jobs are the other. Rows, requests, records, resume and the summary are the
job's, the same for both: only how requests reach the service differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from batchrunner.errors import AuthError, RunStopped
from batchrunner.records import Request, RowResult
from batchrunner.report.summary import RunStats


@dataclass(frozen=True)
class SendPlan:
    """The rows a run sends and where their results go, as the job sets them up."""

    #: The requests of the plan's rows (shard, limit), less the rows in the set.
    requests: Callable[[AbstractSet[str]], Iterator[Request]]
    #: Ids with an ok record from earlier runs; and those recorded as failed.
    done: AbstractSet[str]
    failed: AbstractSet[str]
    #: Rows of the plan still without an ok record, given the ok ids.
    rows_left: Callable[[AbstractSet[str]], int]
    #: Every row's id and the columns its record carries through.
    row_columns: Callable[[], Iterator[tuple[str, dict[str, Any]]]]
    #: Appends records to the results (flushed); raises ``RunStopped`` when the
    #: results storage fails. Results are folded into *stats* by the sender.
    write: Callable[[Sequence[RowResult]], None]
    stats: RunStats
    #: The results file, and its name in messages (which names it on the service).
    output: Path
    shown: str
    #: When ``--deadline`` started counting (``time.monotonic()``).
    deadline_from: float


@dataclass(frozen=True)
class Ending:
    """How sending ended: rows of the plan without an ok record, and any stop."""

    rows_left: int
    stopped: RunStopped | AuthError | None = None


class Sender(Protocol):
    """Sees each planned request to a recorded result, or leaves it to a re-run."""

    async def send(self, plan: SendPlan) -> Ending:
        """Send *plan*'s requests (until told to stop); say how it ended."""
        ...
