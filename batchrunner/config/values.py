"""
How many failed rows one run tolerates: ``--max-failures N`` or ``P%``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class FailureLimit:
    """At most *count* failed rows, or at most *percent* % of the rows to send."""

    count: int | None = None
    percent: float | None = None

    def allowed(self, planned: int) -> int:
        """How many failed rows a run with *planned* rows may have."""
        if self.count is not None:
            return self.count
        assert self.percent is not None
        return math.floor(planned * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


def parse_failure_limit(value: Any) -> FailureLimit:
    """``25`` → at most 25 failed rows; ``2%`` → at most 2 % of the rows sent."""
    if isinstance(value, FailureLimit):
        return value
    if isinstance(value, bool):
        msg = f"{value!r} is not a number of rows or a percentage"
        raise ValueError(msg)
    match = _LIMIT.match(str(value))
    if not match:
        msg = f"{value!r} is not a number of rows (25) or a percentage (2%)"
        raise ValueError(msg)
    number, percent = float(match[1]), bool(match[2])
    if percent:
        if number > 100:
            msg = f"{value!r} is more than 100%"
            raise ValueError(msg)
        return FailureLimit(percent=number)
    if number != int(number):
        msg = f"{value!r} is not a whole number of rows"
        raise ValueError(msg)
    return FailureLimit(count=int(number))
