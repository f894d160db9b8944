"""
The sending stage's seam: the job hands its prepared requests to a ``Sender``
and gets back how the run ended. The online pool (one request a row) is one
sender; Batch API jobs are another. Rows, requests, records, resume and the
summary are the same for both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from batchrunner.records import Request
from batchrunner.send.stops import StopPolicy


class Sender(Protocol):
    """Sees each request to a recorded result, or leaves it to a re-run."""

    async def run(self, requests: Iterable[Request]) -> StopPolicy:
        """Send *requests* (until told to stop); return how the run ended."""
        ...
