"""
An httpx2 transport that sends over aiohttp, for the SDK's ``http_client``.

``AsyncAzureOpenAI`` still builds every request (auth, deployment routing,
api-version, headers) and still turns answers and transport errors into its own
results and exceptions; only the bytes on the wire move from httpcore2 + h11 +
anyio sockets to aiohttp's connection pool and C-accelerated HTTP parser, which
costs a fraction of the CPU per request and writes headers and body in one send.

What it keeps from the default transport:

* timeouts: ``request.extensions["timeout"]`` (connect, read, pool) become an
  aiohttp ``ClientTimeout``; failures come back as httpx2 exceptions
  (``ConnectTimeout``, ``ReadTimeout``, ``ConnectError``, ``RemoteProtocolError``
  …), so the SDK raises ``APITimeoutError`` / ``APIConnectionError`` as before.
  aiohttp has no write timeout: a request body of a few KiB fits in the socket
  buffer, and a peer that stops reading is caught by the read timeout after it.
* TLS: the context comes from ``httpx2.create_ssl_context()``, so the same trust
  store is used and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` still work.
* proxies: ``AiohttpClient`` is an ``httpx2.AsyncClient`` whose transports, the
  direct one and one per proxy httpx2 reads from ``HTTP(S)_PROXY`` /
  ``ALL_PROXY`` / ``NO_PROXY``, are this one: the same proxy choice as httpx2's.
  (aiohttp's own ``trust_env=True`` is not used: it differs from httpx2's rules
  and reads ``~/.netrc`` for every request, in a thread, adding its credentials
  to Azure requests.) A SOCKS proxy keeps httpx2's transport.
* bodies: content encodings are left to httpx2 (``auto_decompress=False``), as
  are cookies and redirects; an ``text/event-stream`` answer is streamed, every
  other answer is read whole before it is handed back.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import httpx2
from yarl import URL

#: Headers aiohttp would add when a request lacks them; httpx2 decides these.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_HTTP_11 = b"HTTP/1.1"
#: httpx2's defaults, for the hooks' signatures (the client always passes limits).
_DEFAULT_LIMITS = httpx2.Limits(max_connections=100, max_keepalive_connections=20)


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """
    Sends httpx2 requests with one aiohttp session (opened on first use, in the
    running loop) holding at most ``limits.max_connections`` connections, through
    *proxy* when one is given.
    """

    def __init__(
        self,
        *,
        limits: httpx2.Limits,
        ssl_context: ssl.SSLContext,
        proxy: httpx2.Proxy | None = None,
    ) -> None:
        self._limits = limits
        self._ssl_context = ssl_context
        self._proxy = proxy
        self._proxy_url = None if proxy is None else URL(str(proxy.url), encoded=True)
        self._proxy_auth = (
            aiohttp.BasicAuth(*proxy.auth) if proxy is not None and proxy.auth else None
        )
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        # Few distinct timeouts occur in a run: build each aiohttp one once.
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            msg = "the transport is closed"
            raise RuntimeError(msg)
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._ssl_context,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_NO_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            requote_redirect_url=False,
        )
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send *request* and return its answer, the body read unless it streams."""
        session = self._session or self._open_session()
        body = await request.aread()
        try:
            answer = await session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=_headers(request),
                data=body or None,
                timeout=self._timeout_for(request),
                allow_redirects=False,
                proxy=self._proxy_url,
                proxy_auth=self._proxy_auth,
                proxy_headers=None if self._proxy is None else self._proxy.headers,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise mapped_error(exc, request) from exc
        stream: httpx2.AsyncByteStream
        if answer.content_type == "text/event-stream":
            stream = _StreamingBody(answer, request)
        else:
            stream = httpx2.ByteStream(await _read(answer, request))
        return httpx2.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=stream,
            extensions={
                "http_version": _http_version(answer.version),
                "reason_phrase": (answer.reason or "").encode("latin-1"),
            },
        )

    def _timeout_for(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        given: dict[str, float | None] = request.extensions.get("timeout") or {}
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = client_timeout(*key)
        return timeout

    async def aclose(self) -> None:
        """Close the session and its connections; later requests are refused."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class AiohttpClient(httpx2.AsyncClient):
    """
    An ``httpx2.AsyncClient`` whose transports are ``AiohttpTransport``: the
    direct one, and one per proxy httpx2 takes from the environment.
    """

    def _init_transport(
        self,
        verify: ssl.SSLContext | str | bool = True,
        cert: httpx2._types.CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = _DEFAULT_LIMITS,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> httpx2.AsyncBaseTransport:
        if transport is not None:
            return transport
        return AiohttpTransport(
            limits=limits,
            ssl_context=httpx2.create_ssl_context(verify, cert, trust_env),
        )

    def _init_proxy_transport(
        self,
        proxy: httpx2.Proxy,
        verify: ssl.SSLContext | str | bool = True,
        cert: httpx2._types.CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx2.Limits = _DEFAULT_LIMITS,
    ) -> httpx2.AsyncBaseTransport:
        if proxy.url.scheme not in ("http", "https"):
            # aiohttp has no SOCKS support; httpx2's transport has (with socksio).
            return super()._init_proxy_transport(
                proxy, verify, cert, trust_env, http1, http2, limits
            )
        return AiohttpTransport(
            limits=limits,
            ssl_context=httpx2.create_ssl_context(verify, cert, trust_env),
            proxy=proxy,
        )


def _headers(request: httpx2.Request) -> list[tuple[str, str]]:
    # The body is sent whole, so aiohttp frames it with a Content-Length; a
    # streamed request's "Transfer-Encoding: chunked" would contradict that.
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in request.headers.raw
        if name.lower() != b"transfer-encoding"
    ]


def client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    """The aiohttp timeout for httpx2's *connect*, *read* and *pool* seconds."""
    # aiohttp's ``connect`` covers waiting for a pooled connection and opening a
    # new one; ``sock_connect`` only the opening, which is httpx2's ``connect``.
    both = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(
        total=None, connect=both, sock_connect=connect, sock_read=read
    )


def _http_version(version: aiohttp.HttpVersion | None) -> bytes:
    if version is None or version == aiohttp.HttpVersion11:
        return _HTTP_11
    return f"HTTP/{version.major}.{version.minor}".encode()


async def _read(answer: aiohttp.ClientResponse, request: httpx2.Request) -> bytes:
    try:
        return await answer.read()
    except BaseException as exc:
        # A half-read connection cannot be reused.
        answer.close()
        if isinstance(exc, aiohttp.ClientError | TimeoutError):
            raise mapped_error(exc, request) from exc
        raise


class _StreamingBody(httpx2.AsyncByteStream):
    """An answer's body as it arrives; closing it releases the connection."""

    def __init__(self, answer: aiohttp.ClientResponse, request: httpx2.Request):
        self._answer = answer
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise mapped_error(exc, self._request) from exc

    async def aclose(self) -> None:
        """Hand the connection back, or drop it when the body was not all read."""
        if self._answer.content.at_eof():
            self._answer.release()
        else:
            self._answer.close()


#: aiohttp's errors → httpx2's, most specific first (the first match wins).
_ERRORS: tuple[tuple[type[BaseException], type[httpx2.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx2.ConnectTimeout),
    (TimeoutError, httpx2.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx2.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx2.ProxyError),
    (aiohttp.ClientConnectorError, httpx2.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx2.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx2.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx2.RemoteProtocolError),
    (aiohttp.ClientConnectionResetError, httpx2.WriteError),
    (aiohttp.ClientOSError, httpx2.ReadError),
    (aiohttp.NonHttpUrlClientError, httpx2.UnsupportedProtocol),
    (aiohttp.InvalidURL, httpx2.LocalProtocolError),
)


def mapped_error(exc: BaseException, request: httpx2.Request) -> httpx2.TransportError:
    """The httpx2 exception the default transport raises for aiohttp's *exc*."""
    kind: type[httpx2.TransportError] = httpx2.TransportError
    for source, target in _ERRORS:
        if isinstance(exc, source):
            kind = target
            break
    return kind(str(exc) or type(exc).__name__, request=request)
