"""
Taking hold of this replica's output: its own shard's, or, when replicas carry
no index, the first shard that no live run holds and that has rows left. And,
for ``--dry-run``, reading what the shard outputs already hold, unlocked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path

from batchrunner.config.groups import OutputSettings
from batchrunner.errors import ConfigError, OutputBusy
from batchrunner.prepare.shards import ShardPlan, shard_output
from batchrunner.results.destination import Output, open_output, peek
from batchrunner.results.resume import read_state

log = logging.getLogger("batchrunner")

#: Seconds between looks at the shards held by other runs.
CLAIM_POLL_SECONDS = 2.0

#: Rows a shard still has to send, given its index and its local results.
RowsLeft = Callable[[int, Path], int]


def hold_output(
    input_arg: str,
    settings: OutputSettings,
    plan: ShardPlan | None,
    environ: Mapping[str, str],
    rows_left: RowsLeft,
) -> tuple[Output, int] | None:
    """
    This replica's output, held (locked or leased), and its shard's index (0
    without shards).

    None when every shard is finished or held by another live run.
    """
    if plan is None or plan.index is not None:
        index = 0 if plan is None or plan.index is None else plan.index
        target = shard_output(settings.path, input_arg, plan, index)
        out = _open(target, settings, environ, fresh=settings.fresh)
        return out, index
    if settings.fresh:
        msg = (
            "--fresh with shards claimed at run time would start finished shards"
            " over; give each replica --shard I/N, or move the old results away"
        )
        raise ConfigError(msg)
    # A replica restarted after a crash finds its old shard still leased for a
    # few seconds; it waits that long for the lease to lapse rather than leave the
    # shard undone. A live run renews its lease, so this never takes its shard.
    deadline = time.monotonic() + settings.claim_wait
    while True:
        held, busy = _claim_round(input_arg, settings, plan, environ, rows_left)
        if held is not None:
            return held
        if not busy or time.monotonic() >= deadline:
            log.info(
                "every shard is finished or held by another run: nothing to do",
                extra={"event": "nothing_to_claim"},
            )
            return None
        time.sleep(min(CLAIM_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _claim_round(
    input_arg: str,
    settings: OutputSettings,
    plan: ShardPlan,
    environ: Mapping[str, str],
    rows_left: RowsLeft,
) -> tuple[tuple[Output, int] | None, bool]:
    """The first free shard with rows left, else None and whether any was busy."""
    busy = False
    for index in range(plan.count):
        target = shard_output(settings.path, input_arg, plan, index)
        try:
            out = _open(target, settings, environ, fresh=False)
        except OutputBusy:
            busy = True
            log.info(
                "shard %d/%d is held by another run", index, plan.count,
                extra={"event": "shard_busy", "output": target},
            )  # fmt: skip
            continue
        if rows_left(index, out.path) > 0:
            log.info(
                "claimed shard %d/%d", index, plan.count,
                extra={"event": "shard_claimed", "output": out.shown},
            )  # fmt: skip
            return (out, index), busy
        out.close()
    return None, busy


def _open(
    target: str, settings: OutputSettings, environ: Mapping[str, str], *, fresh: bool
) -> Output:
    return open_output(
        target, fresh=fresh, account=settings.storage_account, environ=environ
    )


def recorded_done(
    input_arg: str,
    settings: OutputSettings,
    plan: ShardPlan | None,
    environ: Mapping[str, str],
) -> tuple[int | None, AbstractSet[str], str]:
    """
    For ``--dry-run``: the shard to estimate (None: all of them), the ids earlier
    runs finished, and where they were read. Claimed shards are estimated
    together, from every shard's output; nothing is locked.
    """
    if plan is None:
        indexes = [0]
    elif plan.index is not None:
        indexes = [plan.index]
    else:
        indexes = list(range(plan.count))
    done: set[str] = set()
    targets = [shard_output(settings.path, input_arg, plan, i) for i in indexes]
    for target in [] if settings.fresh else targets:
        with peek(target, account=settings.storage_account, environ=environ) as path:
            done |= read_state(path).done_ids
    shown = targets[0] if len(targets) == 1 else f"{len(targets)} shard outputs"
    own = plan is None or plan.index is not None
    return (indexes[0] if own else None), done, shown
