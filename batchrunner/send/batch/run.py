"""
The Batch API sender, the second ``Sender``: the credential and the SDK client
of an online run, the Files and Batches service over it, the collector and the
progress display, wired around a ``SendPlan``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from batchrunner.azure.client import AzureCompleter
from batchrunner.azure.credentials import open_auth
from batchrunner.config.groups import Endpoint
from batchrunner.config.settings import (
    BATCH_MAX_BYTES,
    BATCH_MAX_REQUESTS,
    Settings,
    with_overrides,
)
from batchrunner.errors import ConfigError
from batchrunner.records import RowResult
from batchrunner.report.logs import Redactor
from batchrunner.report.progress import ProgressDisplay
from batchrunner.send.batch.collect import Collector, Ledger
from batchrunner.send.batch.lines import batch_url
from batchrunner.send.batch.sender import BatchEnding, BatchJob, BatchSender
from batchrunner.send.batch.service import BatchService
from batchrunner.send.batch.state import state_path
from batchrunner.send.retry import RetryPolicy
from batchrunner.send.sender import Ending, SendPlan


def check_batch_options(settings: Settings) -> None:
    """Batch-only options online, and what batch mode cannot do, are refused."""
    if settings.mode == "batch":
        batch_url(settings.api)  # embeddings: no Batch API on Azure
        if settings.max_cost is not None:
            msg = (
                "--max-cost is not applied in --mode batch (a batch is priced as a"
                " whole): check the price with --dry-run --mode batch and drop"
                " --max-cost, or use --mode online"
            )
            raise ConfigError(msg)
        _check_file_limits(settings)
        return
    for flag, given in (("--wait", settings.wait), ("--cancel", settings.cancel)):
        if given:
            msg = f"{flag} applies to --mode batch only; add --mode batch"
            raise ConfigError(msg)


def _check_file_limits(settings: Settings) -> None:
    """Input files over the service's limits would fail validation every time."""
    limits = (
        (
            "batch_max_requests",
            settings.batch_max_requests,
            BATCH_MAX_REQUESTS,
            "requests",
        ),
        ("batch_max_bytes", settings.batch_max_bytes, BATCH_MAX_BYTES, "bytes"),
    )
    for name, value, limit, unit in limits:
        if value > limit:
            where = settings.sources.get(name, "default")
            msg = (
                f"{name} is {value:,} ({where}), over the Batch API's limit of"
                f" {limit:,} {unit} an input file: set it to {limit:,} or less"
            )
            raise ConfigError(msg)


def batch_settings(settings: Settings) -> Settings:
    """
    *settings* for a batch run. The built-in simulator's batches last as long as
    the run, so ``--simulate`` waits for them, polling every second.
    """
    if not settings.simulate:
        return settings
    changes: dict[str, Any] = {"wait": True}
    if settings.sources.get("poll_interval", "default") == "default":
        changes["poll_interval"] = 1.0
    return with_overrides(settings, **changes)


class BatchRun:
    """The Batch API sender: a plan's requests as batch jobs; ``send()`` does it."""

    def __init__(
        self,
        settings: Settings,
        *,
        endpoint: Endpoint,
        failed_requests: set[str],
        check: Callable[[RowResult], RowResult] | None,
        redactor: Redactor,
        bar: bool,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        #: Request ids of the error records already written (not written again).
        self.failed_requests = failed_requests
        self.check = check
        self.redactor = redactor
        self.bar = bar

    async def send(self, plan: SendPlan) -> Ending:
        """Sign in, then collect, submit and maybe wait; how it ended."""
        settings = self.settings
        endpoint = self.endpoint
        async with open_auth(
            settings, api_key=endpoint.api_key, on_secret=self.redactor.add
        ) as auth:
            for secret in auth.secrets:
                self.redactor.add(secret)
            assert settings.deployment
            # Files reach 200 MB: httpx streams them, where aiohttp reads them whole.
            client = AzureCompleter(
                replace(settings.client, http_transport="httpx", connections=4),
                endpoint=endpoint.url,
                deployment=settings.deployment,
                api_key=auth.api_key,
                token_provider=auth.token_provider,
            )
            progress = ProgressDisplay(
                plan.stats.rows_planned,
                bar=self.bar,
                interval=settings.progress_interval,
                batches=True,
            )
            try:
                ended = await self._run(plan, client, progress)
            finally:
                progress.close()
                await client.aclose()
        # Every row of the plan without an ok record counts, not only failed ones.
        return Ending(rows_left=ended.rows_left, stopped=ended.stopped)

    async def _run(
        self, plan: SendPlan, client: AzureCompleter, progress: ProgressDisplay
    ) -> BatchEnding:
        settings = self.settings
        stats = plan.stats

        def write(results: Sequence[RowResult]) -> None:
            for result in results:
                stats.add(result)
            plan.write(results)

        policy = RetryPolicy(settings.max_attempts, max_backoff=settings.max_backoff)
        service = BatchService(client.sdk, policy)
        ledger = Ledger(
            done=set(plan.done),
            failed_before=plan.failed,
            failed_requests=self.failed_requests,
        )
        collector = Collector(
            service,
            api=settings.api,
            state_file=state_path(plan.output),
            rows=plan.row_columns,
            ledger=ledger,
            write=write,
            check=self.check,
        )
        job = BatchJob(
            settings,
            results=plan.shown,
            requests=plan.requests,
            rows_left=plan.rows_left,
            stats=stats,
            on_progress=progress.update,
        )
        return await BatchSender(job, service, collector).run()
