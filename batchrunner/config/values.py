"""
Values with a shape of their own: how many failed rows one run tolerates
(``--max-failures N`` or ``P%``), the endpoint's URL and the deployment's name.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from batchrunner.errors import ConfigError

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


def check_endpoint(url: str, source: str) -> None:
    """
    Refuse an endpoint (set by *source*) that is not an http(s) URL with a host:
    every request to it would fail as a connection error, row after row.
    """
    example = "https://<resource>.openai.azure.com"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as exc:
        msg = f"the endpoint {url!r} ({source}) is not a URL: {exc}; write it"
        raise ConfigError(f"{msg} like {example}") from None
    text = url.strip()
    if parts.scheme.lower() not in ("http", "https") or not host or " " in text:
        msg = f"the endpoint {url!r} ({source}) is not an http(s) URL; write it"
        raise ConfigError(f"{msg} like {example}")


#: Characters no deployment name has, that would change the request's URL.
_NOT_IN_NAMES = re.compile(r"[\s/\\?#%]")


def check_deployment(name: str, source: str) -> None:
    """
    Refuse a deployment (set by *source*) that no Azure deployment can be called:
    every row would be a 404 DeploymentNotFound.
    """
    if _NOT_IN_NAMES.search(name):
        msg = (
            f"the deployment {name!r} ({source}) cannot be a deployment name: names"
            " are letters, digits, '-', '_' and '.'; copy it from the portal's"
            " Deployments page"
        )
        raise ConfigError(msg)
