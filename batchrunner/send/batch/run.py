"""
One batch-mode run, wired: the credential and the SDK client of an online run,
the Files and Batches service over it, the collector, the progress display.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

from batchrunner.azure.client import AzureCompleter
from batchrunner.azure.credentials import open_auth
from batchrunner.config.settings import Settings, with_overrides
from batchrunner.errors import ConfigError
from batchrunner.records import Request, RowResult
from batchrunner.report.logs import Redactor
from batchrunner.report.progress import ProgressDisplay
from batchrunner.report.summary import RunStats
from batchrunner.send.batch.collect import Collector, Ledger, RowColumns
from batchrunner.send.batch.lines import batch_url
from batchrunner.send.batch.sender import BatchEnding, BatchJob, BatchSender
from batchrunner.send.batch.service import BatchService
from batchrunner.send.batch.state import state_path
from batchrunner.send.retry import RetryPolicy


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
        return
    for flag, given in (("--wait", settings.wait), ("--cancel", settings.cancel)):
        if given:
            msg = f"{flag} applies to --mode batch only; add --mode batch"
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
    """Everything a batch-mode run needs from the job; ``run()`` does it."""

    def __init__(
        self,
        settings: Settings,
        *,
        results: str,
        output_path: Path,
        done: set[str],
        failed: AbstractSet[str],
        failed_requests: set[str],
        stats: RunStats,
        requests: Callable[[AbstractSet[str]], Iterator[Request]],
        rows: RowColumns,
        rows_left: Callable[[AbstractSet[str]], int],
        write: Callable[[Sequence[RowResult]], None],
        check: Callable[[RowResult], RowResult] | None,
        redactor: Redactor,
        bar: bool,
    ) -> None:
        self.settings = settings
        self.results = results
        self.state_file = state_path(output_path)
        self.ledger = Ledger(
            done=done, failed_before=failed, failed_requests=failed_requests
        )
        self.stats = stats
        self.requests = requests
        self.rows = rows
        self.rows_left = rows_left
        self.write = write
        self.check = check
        self.redactor = redactor
        self.bar = bar

    async def run(self) -> BatchEnding:
        """Sign in, then collect, submit and maybe wait; the exit status."""
        settings = self.settings
        async with open_auth(settings, on_secret=self.redactor.add) as auth:
            for secret in auth.secrets:
                self.redactor.add(secret)
            assert settings.endpoint
            # Files reach 200 MB: httpx streams them, where aiohttp reads them whole.
            client = AzureCompleter(
                with_overrides(settings, http_transport="httpx", concurrency=4),
                endpoint=settings.endpoint,
                api_key=auth.api_key,
                token_provider=auth.token_provider,
            )
            progress = ProgressDisplay(
                self.stats.rows_planned,
                bar=self.bar,
                interval=settings.progress_interval,
                batches=True,
            )
            try:
                return await self._run(client, progress)
            finally:
                progress.close()
                await client.aclose()

    async def _run(
        self, client: AzureCompleter, progress: ProgressDisplay
    ) -> BatchEnding:
        settings = self.settings
        policy = RetryPolicy(settings.max_attempts, max_backoff=settings.max_backoff)
        service = BatchService(client.sdk, policy)
        collector = Collector(
            service,
            api=settings.api,
            state_file=self.state_file,
            rows=self.rows,
            ledger=self.ledger,
            write=self.write,
            check=self.check,
        )
        job = BatchJob(
            settings,
            results=self.results,
            requests=self.requests,
            rows_left=self.rows_left,
            stats=self.stats,
            on_progress=progress.update,
        )
        return await BatchSender(job, service, collector).run()
