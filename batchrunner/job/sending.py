"""
The sending stage, chosen and wired for a job: online or Batch API (``--mode``),
to the settings' endpoint or to a simulator started for the run
(``--simulate``). The SDKs load here, and only once a run is going to send.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from batchrunner.config.groups import Endpoint
from batchrunner.config.settings import Settings
from batchrunner.prepare.structured import AnswerChecker
from batchrunner.report.logs import Redactor
from batchrunner.results.destination import Output
from batchrunner.results.resume import error_request_ids
from batchrunner.rows.stamp import Validated
from batchrunner.send.hooks import run_hooks

if TYPE_CHECKING:
    from batchrunner.send.sender import Sender

log = logging.getLogger("batchrunner")


def sender_for(
    settings: Settings,
    endpoint: Endpoint | None,
    output: Output,
    checker: AnswerChecker | None,
    found: Validated,
    redactor: Redactor,
    bar: bool,
) -> Sender:
    """The online pool, or Batch API jobs for ``--mode batch``."""
    if settings.mode == "batch":
        from batchrunner.send.batch.run import BatchRun

        assert endpoint is not None  # batch mode takes no deployments: list
        return BatchRun(
            settings,
            endpoint=endpoint,
            failed_requests=error_request_ids(output.path),
            check=checker.check if checker is not None else None,
            redactor=redactor,
            bar=bar,
        )
    from batchrunner.send.online import OnlineSender

    hooks = run_hooks(settings, checker, found.repeats)
    return OnlineSender(
        settings, endpoint=endpoint, redactor=redactor, hooks=hooks, bar=bar
    )


def load_send_stage(settings: Settings) -> None:
    """
    Import the SDKs once the run is going to send: a --dry-run, or a run refused
    for a mistake, never pays for them; and before the run's own clock starts,
    so its rates are the sending's.
    """
    if settings.mode == "batch":
        import batchrunner.send.batch.run
    else:
        import batchrunner.send.online  # noqa: F401


def check_mode(settings: Settings) -> None:
    if settings.mode == "batch" or settings.wait or settings.cancel:
        # Batch mode's module loads the SDKs: an online run does not need it.
        from batchrunner.send.batch.run import check_batch_options

        check_batch_options(settings)


def for_mode(settings: Settings) -> Settings:
    if settings.mode != "batch":
        return settings
    from batchrunner.send.batch.run import batch_settings

    return batch_settings(settings)


@contextlib.contextmanager
def open_endpoint(settings: Settings) -> Iterator[Endpoint | None]:
    """
    Where to send: the settings' endpoint (None with ``deployments:``, whose
    entries name their own), or a simulator's, started for the run.
    """
    if not settings.simulate:
        yield settings.target
        return
    from batchrunner.simulator import SimConfig, SimulatorServer

    assert settings.deployment
    model = settings.model or "gpt-4o-mini-2024-07-18"
    key = secrets.token_urlsafe(24)
    config = SimConfig(
        api_key=key, deployments={settings.deployment: model}, latency=0.05
    )
    with SimulatorServer(config) as server:
        log.info(
            "simulating Azure OpenAI at %s", server.url, extra={"event": "simulator"}
        )
        yield Endpoint(server.url, key)
