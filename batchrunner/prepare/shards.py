"""
Which shard of the input a replica takes, and the name of its results.

In order: ``--shard I/N`` (or ``shard:``); a Kubernetes Indexed Job's
``JOB_COMPLETION_INDEX`` with ``shards: N`` (``BATCHRUNNER_SHARDS``, the Job's
``completions``); ``shards: N`` alone, where replicas carry no index (Azure
Container Apps Jobs have none): each replica then claims the first shard that no
live run holds and that has rows left, by taking its output's lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from batchrunner.config.locations import is_blob_url, parse_blob_url
from batchrunner.config.settings import Settings, with_overrides
from batchrunner.errors import ConfigError

#: Set by Kubernetes in each pod of an Indexed Job.
K8S_INDEX = "JOB_COMPLETION_INDEX"
_INPUT_SUFFIXES = (".gz", ".csv", ".jsonl", ".ndjson")


@dataclass(frozen=True)
class ShardPlan:
    """The shard count, the index when known, and where they came from."""

    count: int
    #: None when the replica claims a shard at run time.
    index: int | None
    #: ``settings``, ``JOB_COMPLETION_INDEX`` or ``claim``.
    source: str

    @property
    def from_scheduler(self) -> bool:
        """True when every replica runs the same command (index not given by hand)."""
        return self.source != "settings"


def resolve_shards(
    shard: tuple[int, int] | None, shards: int | None, environ: Mapping[str, str]
) -> ShardPlan | None:
    """The shard plan of this replica, or None for a run over every row."""
    if shard is not None:
        return ShardPlan(count=shard[1], index=shard[0], source="settings")
    raw = environ.get(K8S_INDEX, "").strip()
    if raw:
        if shards is None:
            msg = (
                f"{K8S_INDEX} is set (a Kubernetes Indexed Job) but not the number of"
                " shards: set BATCHRUNNER_SHARDS (or 'shards:') to the Job's"
                " completions"
            )
            raise ConfigError(msg)
        if not raw.isdigit() or int(raw) >= shards:
            msg = f"{K8S_INDEX}={raw!r} is not a shard of 0 … {shards - 1}"
            raise ConfigError(msg)
        return ShardPlan(count=shards, index=int(raw), source=K8S_INDEX)
    if shards is not None and shards > 1:
        return ShardPlan(count=shards, index=None, source="claim")
    return None


def shard_label(
    plan: ShardPlan | None, shard: tuple[int, int] | None = None
) -> str | None:
    """``"2/4"`` for log lines; ``"?/4"`` before a claimed shard is known."""
    if shard is not None:
        return f"{shard[0]}/{shard[1]}"
    if plan is None:
        return None
    return f"{'?' if plan.index is None else plan.index}/{plan.count}"


def default_output(input_arg: str) -> str:
    """``<input dir>/<input stem>.results.jsonl``, for a path or a blob URL."""
    if input_arg == "-":
        return "stdin.results.jsonl"
    if is_blob_url(input_arg):
        location = parse_blob_url(input_arg)
        return str(location.with_name(_stem(location.name) + ".results.jsonl"))
    path = PurePosixPath(input_arg)
    return str(path.with_name(_stem(path.name) + ".results.jsonl"))


def _stem(name: str) -> str:
    for suffix in _INPUT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def shard_output(
    output: str | None, input_arg: str, plan: ShardPlan | None, index: int
) -> str:
    """
    The results of shard *index*: ``{shard}`` and ``{shards}`` in *output* filled in.

    The default name carries the shard (``prompts.shard-0-of-4.results.jsonl``), and
    so does an *output* without placeholders when the shard comes from the scheduler,
    so that N replicas of one command never share a file. An *output* given with
    ``--shard I/N`` is used as it is.
    """
    if plan is None or plan.count == 1:
        return output or default_output(input_arg)
    if output and "{shard" in output:
        return output.replace("{shards}", str(plan.count)).replace(
            "{shard}", str(index)
        )
    if output and not plan.from_scheduler:
        return output
    target = output or default_output(input_arg)
    tag = f".shard-{index}-of-{plan.count}"
    folder, slash, name = target.rpartition("/")
    if output is None:
        name = name.removesuffix(".results.jsonl") + tag + ".results.jsonl"
    else:
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem}{tag}{dot}{suffix}" if dot else name + tag
    return folder + slash + name


def for_shard(settings: Settings, plan: ShardPlan | None, index: int) -> Settings:
    """
    *settings* for shard *index*: its ``shard``, and its share of ``max_cost``.

    The spend cap is the whole job's: N replicas of one command each get 1/N of
    it, so that together they stay under it.
    """
    if plan is None:
        return settings
    changes: dict[str, object] = {"shard": (index, plan.count)}
    if settings.max_cost is not None and plan.count > 1:
        changes["max_cost"] = settings.max_cost / plan.count
    return with_overrides(settings, **changes)
