"""The remembered URL parses: the same URLs and errors as httpx2's own parser."""

from __future__ import annotations

import httpx2
import httpx2._urlparse
import pytest

from batchrunner.azure import urlcache


@pytest.fixture(autouse=True)
def cached() -> None:
    assert urlcache.install()


def _uncached(url: str = "", **kwargs: str | None) -> httpx2._urlparse.ParseResult:
    return httpx2._urlparse.urlparse.__wrapped__(url, **kwargs)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(
    "url",
    [
        "https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=1",
        "http://127.0.0.1:8080/x%20y?a=b&c",
        "/deployments/gpt-4o-mini/chat/completions",
        "https://user:pw@[::1]:443/p#frag",
    ],
)
def test_parses_as_httpx2_does(url: str) -> None:
    """Each URL parses as httpx2 parses it, the first time and from the cache."""
    assert httpx2.URL(url)._uri_reference == _uncached(url)
    assert httpx2.URL(url)._uri_reference == _uncached(url)  # again, from the cache


def test_joins_and_query_params_as_httpx2_does() -> None:
    """A joined path and merged query params come out as httpx2 builds them."""
    base = httpx2.URL("https://res.openai.azure.com/openai/")
    joined = base.copy_with(raw_path=base.raw_path + b"deployments/d/embeddings")
    assert str(joined) == "https://res.openai.azure.com/openai/deployments/d/embeddings"
    with_query = joined.copy_merge_params({"api-version": "2024-10-21"})
    assert with_query.params["api-version"] == "2024-10-21"
    assert str(with_query).endswith("/embeddings?api-version=2024-10-21")


def test_a_bad_url_still_raises_every_time() -> None:
    """A URL httpx2 refuses is refused again, not served from the cache."""
    for _ in range(2):
        with pytest.raises(httpx2.InvalidURL, match="non-printable"):
            httpx2.URL("https://example.com/a\nb")


def test_installing_twice_wraps_once() -> None:
    """A second install() leaves the parser wrapped once, not twice."""
    parse = httpx2._urlparse.urlparse
    assert urlcache.install()
    assert httpx2._urlparse.urlparse is parse
