"""
What a run does around each row, besides sending it: reuse an answer already paid
for (``cache.Sharer``) and check a structured answer (``structured.AnswerChecker``).
"""

from __future__ import annotations

from collections.abc import Mapping

from batchrunner.config.settings import Settings
from batchrunner.prepare.structured import AnswerChecker
from batchrunner.records import Request, RowResult
from batchrunner.send.reuse import Sharer, open_cache


class RunHooks:
    """The ``pool.RowHooks`` of a run: *sharer* and *checker*, either may be None."""

    def __init__(self, *, sharer: Sharer | None, checker: AnswerChecker | None) -> None:
        self.sharer = sharer
        self.checker = checker

    async def before(self, request: Request) -> RowResult | None:
        """A result that needs no request (a reused answer), or None."""
        if self.sharer is None:
            return None
        return await self.sharer.before(request)

    def after(self, request: Request, result: RowResult | None) -> RowResult | None:
        """*result* checked, then shared: an answer failing the schema is not reused."""
        if result is not None and self.checker is not None:
            result = self.checker.check(result)
        if self.sharer is not None:
            result = self.sharer.after(request, result)
        return result


def run_hooks(
    settings: Settings,
    checker: AnswerChecker | None,
    repeats: Mapping[int, int] | None,
) -> RunHooks | None:
    """The hooks *settings* ask for (None when none), with the cache opened."""
    cache = open_cache(settings)
    sharer = None
    if settings.dedupe or cache is not None:
        sharer = Sharer(dedupe=settings.dedupe, repeats=repeats, cache=cache)
    if sharer is None and checker is None:
        return None
    return RunHooks(sharer=sharer, checker=checker)
