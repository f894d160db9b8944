"""
The aiohttp transport under the real SDK: the same answers, headers, errors,
timeouts, limits and proxies as the SDK's default httpx transport.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchrunner.azure.client import AzureCompleter, http_client
from batchrunner.azure.transport import AiohttpClient, AiohttpTransport, client_timeout
from batchrunner.config.layers import build_settings
from batchrunner.config.settings import Settings
from batchrunner.errors import ApiFailure, ConfigError
from batchrunner.records import Api, Request
from batchrunner.simulator import SimulatorServer
from tests.conftest import DEPLOYMENT, SECRET_KEY

TRANSPORTS = ["aiohttp", "httpx"]


def _settings(transport: str = "aiohttp", **options: Any) -> Settings:
    return Settings(deployment=DEPLOYMENT, http_transport=transport, **options)


def _completer(
    simulator: SimulatorServer, transport: str = "aiohttp", **options: Any
) -> AzureCompleter:
    return AzureCompleter(
        _settings(transport, **options).client,
        endpoint=simulator.url,
        deployment=DEPLOYMENT,
        api_key=SECRET_KEY,
    )


def _chat(text: str) -> Request:
    return Request(
        row_id=text,
        api=Api.CHAT,
        body={"messages": [{"role": "user", "content": text}]},
        prompt_tokens=0,
        charged_tokens=0,
    )


async def _failure(completer: AzureCompleter, text: str) -> ApiFailure:
    with pytest.raises(ApiFailure) as caught:
        await completer.complete(_chat(text))
    return caught.value


def test_aiohttp_is_the_default_and_httpx_the_escape_hatch() -> None:
    """Without a setting the SDK gets the aiohttp client; the env var picks httpx."""
    timeout = httpx2.Timeout(5.0)
    default = build_settings({}, {}, None)
    chosen = build_settings({}, {"BATCHRUNNER_HTTP_TRANSPORT": "httpx"}, None)
    assert type(http_client(default.client, timeout)) is AiohttpClient
    assert type(http_client(chosen.client, timeout)) is httpx2.AsyncClient
    assert chosen.sources["http_transport"] == "env BATCHRUNNER_HTTP_TRANSPORT"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_answer_carries_request_id_and_rate_headers(
    simulator: SimulatorServer, transport: str
) -> None:
    """An answer comes back whole, with its x-request-id and x-ratelimit headers."""
    simulator.config.rpm = 600
    completer = _completer(simulator, transport)
    try:
        reply = await completer.complete(_chat("Name a river."))
    finally:
        await completer.aclose()
    assert isinstance(reply.output, str) and reply.output
    assert reply.usage.prompt_tokens > 0
    assert reply.request_id
    assert reply.limits is not None and reply.limits.remaining_requests == 99
    (entry,) = simulator.ledger.entries
    assert (entry.deployment, entry.auth, entry.status) == (DEPLOYMENT, "api-key", 200)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_throttled_answer_shows_its_wait(
    simulator: SimulatorServer, transport: str
) -> None:
    """A 429's retry-after-ms, status and request id reach ``failure_from``."""
    completer = _completer(simulator, transport)
    try:
        failure = await _failure(completer, "[[sim:429]] hi")
    finally:
        await completer.aclose()
    assert (failure.kind, failure.status_code) == ("RateLimitError", 429)
    assert failure.retryable
    assert failure.retry_after == pytest.approx(0.05)
    assert failure.request_id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_reset_is_a_connection_error_and_the_pool_recovers(
    simulator: SimulatorServer, transport: str
) -> None:
    """A dropped connection is a retryable APIConnectionError; the next row is ok."""
    completer = _completer(simulator, transport)
    try:
        failure = await _failure(completer, "[[sim:reset]] hi")
        reply = await completer.complete(_chat("[[sim:reset]] hi"))
    finally:
        await completer.aclose()
    assert failure.kind == "APIConnectionError"
    assert failure.retryable
    assert "(RemoteProtocolError)" in failure.message
    assert reply.output
    assert [e.status for e in simulator.ledger.entries] == ["reset", 200]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_slow_answer_is_a_timeout(
    simulator: SimulatorServer, transport: str
) -> None:
    """An answer slower than --timeout is a retryable APITimeoutError (ReadTimeout)."""
    completer = _completer(simulator, transport, timeout=0.3)
    try:
        failure = await _failure(completer, "[[sim:slow]] hi")
        reply = await completer.complete(_chat("[[sim:slow]] hi"))
    finally:
        await completer.aclose()
    assert failure.kind == "APITimeoutError"
    assert failure.retryable
    assert "(ReadTimeout)" in failure.message
    assert reply.output


async def test_refused_connection_is_a_connect_error() -> None:
    """Nobody listening: a retryable APIConnectionError caused by ConnectError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    completer = AzureCompleter(
        _settings().client,
        endpoint=f"http://127.0.0.1:{port}",
        deployment=DEPLOYMENT,
        api_key=SECRET_KEY,
    )
    try:
        failure = await _failure(completer, "hi")
    finally:
        await completer.aclose()
    assert (failure.kind, failure.retryable) == ("APIConnectionError", True)
    assert "(ConnectError)" in failure.message


async def test_connections_never_exceed_the_concurrency(
    simulator: SimulatorServer,
) -> None:
    """Twelve rows at once through a pool of three: at most three in flight."""
    simulator.config.latency = 0.2
    completer = _completer(simulator, concurrency=3)
    try:
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(completer.complete, _chat(f"question {i}"))
    finally:
        await completer.aclose()
    assert simulator.ledger.count(200) == 12
    assert simulator.ledger.max_in_flight <= 3


async def test_closing_leaves_nothing_open(
    simulator: SimulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    """After ``aclose`` the session is closed and nothing warns of an open one."""
    completer = _completer(simulator)
    await completer.complete(_chat("hi"))
    transport = completer._http._transport
    assert isinstance(transport, AiohttpTransport)
    session = transport._session
    assert session is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await completer.aclose()
        closed = session.closed
        # aiohttp warns of an unclosed session when it is collected.
        del completer, transport, session
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert [r for r in caplog.records if "nclosed" in r.getMessage()] == []
    assert closed


async def test_env_proxy_is_used_as_httpx_would(
    simulator: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY routes requests through the proxy; NO_PROXY sends them direct."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with SimulatorServer(simulator.config) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        completer = _completer(simulator)
        try:
            await completer.complete(_chat("via the proxy"))
        finally:
            await completer.aclose()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        completer = _completer(simulator)
        try:
            await completer.complete(_chat("direct"))
        finally:
            await completer.aclose()
        assert [e.prompt for e in proxy.ledger.entries] == ["via the proxy"]
    assert [e.prompt for e in simulator.ledger.entries] == ["direct"]


def test_timeouts_translate_to_aiohttp() -> None:
    """httpx2's connect/read/pool seconds become aiohttp's socket and pool limits."""
    timeout = client_timeout(10.0, 60.0, 60.0)
    assert (timeout.total, timeout.sock_connect, timeout.sock_read) == (None, 10, 60)
    assert timeout.connect == 70.0
    assert client_timeout(None, None, None).connect is None


# --- wire details ------------------------------------------------------------

_CHAT_ANSWER = b'{"choices": [{"index": 0, "message": {"content": "hi"}}]}'


class _Capture:
    """A bare HTTP/1.1 server that keeps every request's head and body as sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[list[bytes], bytes]] = []

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read one request (Content-Length framed), answer a fixed chat body."""
        head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[:-2]
        lengths = [line for line in head if line.lower().startswith(b"content-length")]
        size = int(lengths[0].split(b":")[1]) if lengths else 0
        self.requests.append((head, await reader.readexactly(size)))
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(_CHAT_ANSWER), _CHAT_ANSWER)
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def capture() -> AsyncIterator[tuple[_Capture, str]]:
    """A ``_Capture`` server on loopback and its URL."""
    recorder = _Capture()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield recorder, f"http://127.0.0.1:{port}"


async def test_sdk_requests_are_byte_identical_on_both_transports(
    capture: tuple[_Capture, str],
) -> None:
    """The SDK's request line, headers (order and case) and body do not change."""
    recorder, url = capture
    for transport in TRANSPORTS:
        completer = AzureCompleter(
            _settings(transport).client,
            endpoint=url,
            deployment=DEPLOYMENT,
            api_key=SECRET_KEY,
        )
        try:
            reply = await completer.complete(_chat("same bytes"))
        finally:
            await completer.aclose()
        assert reply.output == "hi"
    (aiohttp_head, aiohttp_body), (httpx_head, httpx_body) = recorder.requests
    assert aiohttp_head == httpx_head
    assert aiohttp_body == httpx_body
    route = f"POST /openai/deployments/{DEPLOYMENT}/chat/completions?"
    assert aiohttp_head[0].startswith(route.encode())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_proxy_credentials_go_to_the_proxy(
    capture: tuple[_Capture, str], monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    """Credentials in HTTP_PROXY become Proxy-Authorization, as httpx2 sends them."""
    recorder, proxy = capture
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.replace("http://", "http://user:pw@"))
    completer = AzureCompleter(
        _settings(transport).client,
        endpoint="http://azure.invalid",
        deployment=DEPLOYMENT,
        api_key=SECRET_KEY,
    )
    try:
        await completer.complete(_chat("via the proxy"))
    finally:
        await completer.aclose()
    ((head, _),) = recorder.requests
    assert head[0].startswith(b"POST http://azure.invalid/openai/deployments/")
    assert b"Proxy-Authorization: Basic dXNlcjpwdw==" in head


async def test_streamed_request_body_is_framed_once(
    capture: tuple[_Capture, str],
) -> None:
    """A streamed request body goes whole with a Content-Length and no chunking."""
    recorder, url = capture

    async def pieces() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"def"

    async with AiohttpClient() as client:
        await client.post(url + "/upload", content=pieces())
    ((head, body),) = recorder.requests
    framing = [line.lower() for line in head if line.lower().startswith(b"content-")]
    assert framing == [b"content-length: 6"]
    assert not [line for line in head if line.lower().startswith(b"transfer-")]
    assert body == b"abcdef"


# --- more wire details, against a small aiohttp app --------------------------


async def _wire(request: web.Request) -> web.StreamResponse:
    if request.path == "/events":
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        for n in range(3):
            await answer.write(f"data: {n}\n\n".encode())
        await answer.write_eof()
        return answer
    headers = [("x-multi", "one"), ("x-multi", "two"), ("Content-Encoding", "gzip")]
    body = gzip.compress(b'{"echo": "%s"}' % request.headers["x-echo"].encode())
    answer = web.Response(body=body, content_type="application/json")
    for name, value in headers:
        answer.headers.add(name, value)
    return answer


def _wire_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _wire)
    return app


@pytest.fixture
async def wire() -> AsyncIterator[str]:
    """A local app answering with repeated headers, gzip, and an event stream."""
    async with TestServer(_wire_app(), host="127.0.0.1") as server:
        yield str(server.make_url(""))


async def test_repeated_headers_and_gzip_come_through(wire: str) -> None:
    """Every value of a repeated header survives; httpx2 does the gzip decoding."""
    async with AiohttpClient() as client:
        answer = await client.post(wire + "/x", headers={"x-echo": "hi"}, json={})
    assert answer.headers.get_list("x-multi") == ["one", "two"]
    assert answer.json() == {"echo": "hi"}


async def test_event_stream_is_streamed(wire: str) -> None:
    """A streamed answer arrives in pieces and closing it returns the connection."""
    async with (
        AiohttpClient() as client,
        client.stream("GET", wire + "/events") as answer,
    ):
        text = "".join([piece async for piece in answer.aiter_text()])
    assert text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_tls_trusts_the_ca_named_by_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS to a private CA fails until SSL_CERT_FILE names it, as with httpx2."""
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = TestServer(_wire_app(), host="127.0.0.1")
    await server.start_server(ssl=server_context)
    url = str(server.make_url("/x"))
    try:
        async with AiohttpClient() as client:
            with pytest.raises(httpx2.ConnectError):
                await client.post(url, headers={"x-echo": "tls"})
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        async with AiohttpClient() as client:
            answer = await client.post(url, headers={"x-echo": "tls"})
    finally:
        await server.close()
    assert answer.json() == {"echo": "tls"}


def test_settings_file_accepts_the_transport(tmp_path: Path) -> None:
    """``http_transport`` is a settings-file key; a wrong value names the choices."""
    config = tmp_path / "config.yaml"
    config.write_text("http_transport: httpx\n", encoding="utf-8")
    assert build_settings({}, {}, config).http_transport == "httpx"
    config.write_text("http_transport: curl\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="aiohttp, httpx"):
        build_settings({}, {}, config)
