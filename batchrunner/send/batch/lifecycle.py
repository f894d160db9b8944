"""
The rules of a batch-mode run, as plain functions of what the service reports:
which batches still run, which files no batch uses, what a validation failure
means, how long to back off, and the exit status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from openai.types import Batch, FileObject

from batchrunner.errors import Resumable
from batchrunner.send.batch.names import DEPLOYMENT_KEY

#: Statuses of a batch that has ended: its output and error files are final.
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
#: Validation codes that mean the deployment cannot run batches at all.
DEPLOYMENT_CODES = frozenset({"invalid_request", "model_not_found"})
#: Back-off before retrying a create the enqueued-token quota refused (the docs').
TOKEN_LIMIT_FIRST_WAIT = 5.0
TOKEN_LIMIT_MAX_WAIT = 300.0


def is_running(batch: Batch) -> bool:
    """Whether *batch* may still answer rows (``cancelling`` does; unknown too)."""
    return batch.status not in ENDED


def unused_files(files: Iterable[FileObject], batches: Iterable[Batch]) -> list[str]:
    """The ids of uploaded *files* that no batch was created from."""
    used = {batch.input_file_id for batch in batches}
    return [file.id for file in files if file.id not in used]


def spent_files(
    files: Iterable[FileObject], batches: Iterable[Batch], collected: AbstractSet[str]
) -> list[str]:
    """
    The ids of uploaded *files* whose batch has ended and is collected: nothing
    reads them again, and a resource keeps at most 500 batch input files.
    """
    spent = {
        batch.input_file_id
        for batch in batches
        if batch.id in collected and not is_running(batch)
    }
    return [file.id for file in files if file.id in spent]


@dataclass(frozen=True)
class LineFault:
    """A validation error the service tied to one input line."""

    line: int
    code: str | None
    message: str


def validation_faults(batch: Batch) -> list[LineFault]:
    """
    The errors of a failed *batch* that name an input line (1-based), less those
    about the deployment (which concern every line, see ``deployment_refusal``).
    """
    data = batch.errors.data if batch.errors is not None else None
    return [
        LineFault(int(error.line), error.code, error.message or "invalid line")
        for error in data or ()
        if error.line is not None and error.code not in DEPLOYMENT_CODES
    ]


def deployment_refusal(batch: Batch, deployment: str) -> str | None:
    """
    What to tell the user when *batch* failed because *deployment* cannot run
    batches (not a Global-Batch or Data Zone Batch deployment), else None. A
    batch sent to another deployment (the user has since fixed the settings)
    says nothing about this one: its rows are simply sent again.
    """
    if batch.status != "failed" or batch.errors is None:
        return None
    sent_to = (batch.metadata or {}).get(DEPLOYMENT_KEY, deployment)
    if sent_to != deployment[-512:]:
        return None
    for error in batch.errors.data or ():
        if error.code in DEPLOYMENT_CODES:
            return (
                f"batch {batch.id} failed validation ({error.code}: {error.message});"
                f" the deployment {deployment!r} must be a Global-Batch or Data Zone"
                " Batch deployment of the model: create one in the Azure AI Foundry"
                " portal (deployment type 'Global Batch') and pass its name with"
                " --deployment, or use --mode online for this one"
            )
    return None


def failure_text(batch: Batch) -> str:
    """Why *batch* failed, in one line, from its ``errors``."""
    data = batch.errors.data if batch.errors is not None else None
    if not data:
        return "no reason given"
    shown = [f"{e.code}: {e.message}" for e in data[:3]]
    more = f" (+{len(data) - 3} more)" if len(data) > 3 else ""
    return "; ".join(shown) + more


def token_limit_waits(max_tries: int, time_left: float | None) -> Sequence[float]:
    """
    The waits before each retry of a create refused for the enqueued-token quota:
    5, 10, 20 … seconds (capped), *max_tries* - 1 of them, or as many as fit into
    *time_left* when a deadline is set.
    """
    waits: list[float] = []
    wait = TOKEN_LIMIT_FIRST_WAIT
    spent = 0.0
    while True:
        if time_left is None and len(waits) >= max_tries - 1:
            return waits
        if time_left is not None and spent + wait > time_left:
            return waits
        waits.append(wait)
        spent += wait
        wait = min(wait * 2, TOKEN_LIMIT_MAX_WAIT)


def why_stopped(running: int, held_back: str | None) -> Resumable | None:
    """
    Why the run ends before every row is answered, for a later run to go on
    (exit 75): batches still running, or rows held back (*held_back* says why).
    None when nothing is left to wait for: every row is ok, or some failed.
    """
    if running:
        batches = "1 batch is" if running == 1 else f"{running} batches are"
        return Resumable(
            f"{batches} still running: run the same command again to collect"
            " them (or add --wait)"
        )
    if held_back is not None:
        return Resumable(held_back)
    return None
