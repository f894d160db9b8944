"""
Remembered URL parses for httpx2, which the SDK's requests go through.

For every request the SDK and httpx2 parse the same three or four URLs again
(the deployment path, its join with the endpoint, the api-version query): about
a tenth of a request's CPU in this client, in a pure-Python parser that checks
each character. ``urlparse`` is a pure function of its arguments and returns an
immutable ``NamedTuple``, so remembering its answers changes nothing but the
cost. It is wrapped only where httpx2 calls it; if a future httpx2 moves it,
``install`` leaves httpx2 as it is and requests cost what they cost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import httpx2._urlparse
import httpx2._urls

#: Distinct URLs a run sees: a few per endpoint and operation (proxies included).
CACHE_SIZE = 256


def install() -> bool:
    """Route httpx2's URL parsing through the cache; True when it is in place."""
    found = getattr(httpx2._urlparse, "urlparse", None)
    if not callable(found) or getattr(httpx2._urls, "urlparse", None) is not found:
        return False
    if getattr(found, "_batchrunner_cached", False):
        return True
    parse = cast("Callable[..., Any]", found)

    @functools.lru_cache(maxsize=CACHE_SIZE)
    def parse_cached(url: str, items: tuple[tuple[str, Any], ...]) -> Any:
        return parse(url, **dict(items))

    @functools.wraps(parse)
    def urlparse(url: str = "", **kwargs: Any) -> Any:
        try:
            return parse_cached(url, tuple(sorted(kwargs.items())))
        except TypeError:  # an unhashable argument: parse as httpx2 would
            return parse(url, **kwargs)

    urlparse._batchrunner_cached = True  # type: ignore[attr-defined]
    # copy_with() calls the module's global; URL() the name _urls imported.
    setattr(httpx2._urlparse, "urlparse", urlparse)  # noqa: B010
    setattr(httpx2._urls, "urlparse", urlparse)  # noqa: B010
    return True
