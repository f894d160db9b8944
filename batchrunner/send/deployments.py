"""
A run over several deployments (``deployments:``): one client and one pacer
per entry, the router over them, and the pool that sends through it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial

import anyio

from batchrunner.azure.client import AzureCompleter
from batchrunner.azure.credentials import Auth
from batchrunner.config.prices import answer_price
from batchrunner.config.settings import Settings, with_overrides
from batchrunner.errors import ConfigError
from batchrunner.records import RowResult
from batchrunner.report.summary import RunStats
from batchrunner.send.pacer import Pacer
from batchrunner.send.pool import Pool
from batchrunner.send.route import Route
from batchrunner.send.router import Lane
from batchrunner.send.routes import RouteTable
from batchrunner.send.row import RowHooks, RowSender
from batchrunner.send.stops import StopPolicy

log = logging.getLogger("batchrunner")

#: Settings the entries replace, as the user knows them.
_REPLACED = {
    "endpoint": "AZURE_OPENAI_ENDPOINT",
    "deployment": "AZURE_OPENAI_DEPLOYMENT/--deployment",
    "tpm": "--tpm",
    "rpm": "--rpm",
}


def for_deployments(settings: Settings) -> Settings:
    """
    *settings* ready for a run over its ``deployments:``: the single-deployment
    settings it replaces are said to be unused, and the model (for token counts
    and prices) is guessed from the first entry when not set.
    """
    if settings.simulate:
        msg = (
            "--simulate runs one simulated deployment and cannot stand in for"
            " 'deployments:'; leave one of them out (several simulators can be run"
            " with: python -m batchrunner.simulator --port N)"
        )
        raise ConfigError(msg)
    if settings.mode == "batch":
        msg = (
            "--mode batch sends to one Global-Batch deployment and cannot use"
            " 'deployments:'; give that deployment alone (--deployment and"
            " AZURE_OPENAI_ENDPOINT), or leave --mode batch out"
        )
        raise ConfigError(msg)
    unused = [
        shown
        for name, shown in _REPLACED.items()
        if getattr(settings, name) is not None
    ]
    if unused:
        log.info(
            "%d deployments are set: %s not used (each entry has its own)",
            len(settings.deployments),
            ", ".join(unused),
            extra={"event": "deployments", "unused": unused},
        )
    # The run's budget is the entries' sum, when every one gives its quota
    # (for --dry-run's duration and the progress display).
    changes: dict[str, object] = {"endpoint": None, "deployment": None}
    changes.update(tpm=_total(e.tpm for e in settings.deployments))
    changes.update(rpm=_total(e.rpm for e in settings.deployments))
    if settings.model is None:
        changes["model"] = settings.deployments[0].deployment
    return with_overrides(settings, **changes)


def _total(quotas: Iterable[int | None]) -> int | None:
    """The sum of *quotas*, or None when one of them is unknown."""
    known = list(quotas)
    if None in known:
        return None
    return sum(q for q in known if q is not None)


def deployment_routes(
    settings: Settings,
    auths: Mapping[str, Auth],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> tuple[list[Route], list[Lane]]:
    """One route (its client, its own pacer) and one router lane per entry."""
    routes: list[Route] = []
    lanes: list[Lane] = []
    for entry in settings.deployments:
        auth = auths[entry.name]
        client = AzureCompleter(
            settings.client,
            endpoint=entry.endpoint,
            deployment=entry.deployment,
            api_key=auth.api_key,
            token_provider=auth.token_provider,
        )
        pacer = Pacer(entry.rpm, entry.tpm, clock=clock, sleep=sleep)
        route = Route(client, pacer, entry.name, on_unauthorized=auth.on_unauthorized)
        routes.append(route)
        lanes.append(Lane(entry.name, pacer, entry.priority, entry.weight))
    return routes, lanes


def multi_pool(
    routes: Sequence[Route],
    lanes: Sequence[Lane],
    settings: Settings,
    *,
    write: Callable[[Sequence[RowResult]], None],
    stats: RunStats,
    on_progress: Callable[[RunStats], None] | None = None,
    hooks: RowHooks | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    deadline_from: float | None = None,
) -> Pool:
    """The online pool over *routes*, each request routed by the router."""
    if stats.price_for is None:
        stats.price_for = partial(answer_price, settings)
    control = StopPolicy(settings.stops, deadline_from=deadline_from)
    retries = settings.retries
    table = RouteTable(
        routes,
        control,
        lanes=lanes,
        max_retry_wait=retries.max_retry_wait,
        clock=clock,
        sleep=sleep,
    )
    sender = RowSender(
        table, retries, control, stats, hooks=hooks, sleep=sleep, clock=clock
    )
    return Pool(
        sender,
        control,
        concurrency=settings.concurrency,
        write=write,
        stats=stats,
        on_progress=on_progress,
        sleep=sleep,
        clock=clock,
    )
