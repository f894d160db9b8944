"""
The composition root: one job read top to bottom (``run.run_job``), and its
input side (``source``). Nothing below it knows how the stages are put together.
"""

from __future__ import annotations

from batchrunner.job.run import Outcome, run_job

__all__ = ["Outcome", "run_job"]
