"""
The online sender: one request a row, through the pool, over the run's
credential and one ``AsyncAzureOpenAI`` client — or, with ``deployments:``, one
client and pacer per deployment behind the router.
"""

from __future__ import annotations

from batchrunner.azure.client import AzureCompleter, Completer
from batchrunner.azure.credentials import Auth, open_auth, open_deployment_auths
from batchrunner.config.groups import Endpoint
from batchrunner.config.settings import Settings
from batchrunner.report.logs import Redactor
from batchrunner.report.progress import ProgressDisplay
from batchrunner.send.deployments import deployment_routes, multi_pool
from batchrunner.send.pool import Pool, online_pool
from batchrunner.send.row import RowHooks
from batchrunner.send.sender import Ending, SendPlan


class OnlineSender:
    """Sends a plan's requests one a row, paced, retried, as answers come."""

    def __init__(
        self,
        settings: Settings,
        *,
        endpoint: Endpoint | None,
        redactor: Redactor,
        hooks: RowHooks | None,
        bar: bool,
    ) -> None:
        self.settings = settings
        #: None with ``deployments:``, whose entries each name their own.
        self.endpoint = endpoint
        self.redactor = redactor
        self.hooks = hooks
        self.bar = bar

    async def send(self, plan: SendPlan) -> Ending:
        """Sign in, then run the pool over the plan's requests."""
        settings = self.settings
        # Fetched tokens join the redactor as they come (the first before any row).
        if settings.deployments:
            async with open_deployment_auths(
                settings, on_secret=self.redactor.add
            ) as auths:
                return await self._send(plan, auths)
        assert self.endpoint is not None
        async with open_auth(
            settings, api_key=self.endpoint.api_key, on_secret=self.redactor.add
        ) as auth:
            return await self._send(plan, auth)

    async def _send(self, plan: SendPlan, auth: Auth | dict[str, Auth]) -> Ending:
        settings = self.settings
        auths = auth if isinstance(auth, dict) else {"": auth}
        for secret in (s for one in auths.values() for s in one.secrets):
            self.redactor.add(secret)
        progress = ProgressDisplay(
            plan.stats.rows_planned,
            bar=self.bar,
            tpm=settings.tpm,
            interval=settings.progress_interval,
        )
        pool, clients = self._pool(plan, auth, progress)
        try:
            control = await pool.run(plan.requests(plan.done))
        finally:
            progress.close()
            for client in clients:
                await client.aclose()
        # Without a stop every planned row was tried: those without an ok record
        # are the ones that failed.
        stopped = control.interrupted or control.cause
        return Ending(rows_left=plan.stats.rows_failed, stopped=stopped)

    def _pool(
        self, plan: SendPlan, auth: Auth | dict[str, Auth], progress: ProgressDisplay
    ) -> tuple[Pool, list[Completer]]:
        """The pool over one deployment's route, or over a route a deployment."""
        settings = self.settings
        if isinstance(auth, dict):
            routes, lanes = deployment_routes(settings, auth)
            pool = multi_pool(
                routes, lanes, settings, write=plan.write, stats=plan.stats,
                on_progress=progress.update, hooks=self.hooks,
                deadline_from=plan.deadline_from,
            )  # fmt: skip
            return pool, [route.client for route in routes]
        assert self.endpoint is not None and settings.deployment
        client = AzureCompleter(
            settings.client,
            endpoint=self.endpoint.url,
            deployment=settings.deployment,
            api_key=auth.api_key,
            token_provider=auth.token_provider,
        )
        pool = online_pool(
            client,
            settings,
            write=plan.write,
            stats=plan.stats,
            on_progress=progress.update,
            on_unauthorized=auth.on_unauthorized,
            hooks=self.hooks,
            # Loading the SDKs, fetching a token and reading earlier results
            # all come out of the deadline: it counts from the process's start.
            deadline_from=plan.deadline_from,
        )
        return pool, [client]
