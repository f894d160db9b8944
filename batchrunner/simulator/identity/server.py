"""
The fake identity endpoints served on loopback (HTTP, and HTTPS with a throwaway
CA), on their own event loop in a daemon thread.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from aiohttp import web

from batchrunner.simulator.background import BackgroundServer
from batchrunner.simulator.identity.endpoints import create_app
from batchrunner.simulator.identity.issuer import (
    TENANT_ID,
    TokenIssuer,
)


def _bound_socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class IdentityServer(BackgroundServer):
    """
    The fake endpoints on their own event loop in a daemon thread: plain HTTP,
    and HTTPS too when *tls* is given (``trustme``'s CA, see ``TestCA``).
    """

    thread_name = "batchrunner-identity"

    def __init__(
        self,
        issuer: TokenIssuer | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.issuer = issuer if issuer is not None else TokenIssuer()
        self.host = host
        self._tls = tls
        self.port = 0
        self.tls_port = 0
        super().__init__()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def https_url(self) -> str:
        """``https://127.0.0.1:PORT``, for ``AZURE_AUTHORITY_HOST``."""
        if not self.tls_port:
            msg = "the identity server was started without tls"
            raise RuntimeError(msg)
        return f"https://{self.host}:{self.tls_port}"

    def app_service_environment(self) -> dict[str, str]:
        """What App Service / Container Apps set for their managed identity."""
        return {
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self.issuer.identity_header,
        }

    def imds_environment(self) -> dict[str, str]:
        """Points azure-identity's IMDS requests here instead of 169.254.169.254."""
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": self.url}

    def workload_environment(self, token_file: Path) -> dict[str, str]:
        """What AKS's workload identity webhook sets, with the token written out."""
        token_file.write_text(self.issuer.federated_token, encoding="utf-8")
        return {
            "AZURE_AUTHORITY_HOST": self.https_url,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_CLIENT_ID": self.issuer.client_ids[0],
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        }

    async def _serve(self) -> web.AppRunner:
        runner = web.AppRunner(
            create_app(self.issuer), access_log=None, handle_signals=False
        )
        await runner.setup()
        plain = _bound_socket(self.host)
        await web.SockSite(runner, plain).start()
        self.port = plain.getsockname()[1]
        if self._tls is not None:
            secure = _bound_socket(self.host)
            await web.SockSite(runner, secure, ssl_context=self._tls).start()
            self.tls_port = secure.getsockname()[1]
        return runner


class TestCA:
    """
    A throwaway certificate authority (``trustme``, a dev dependency) and a
    certificate for 127.0.0.1 signed by it.

    azure-identity's async transport is aiohttp, whose default TLS context is
    built once, when aiohttp is imported, from OpenSSL's default paths, which
    ``SSL_CERT_FILE`` names. So the CA reaches a *new* process through
    ``SSL_CERT_FILE`` (``REQUESTS_CA_BUNDLE`` is read by requests only).
    """

    __test__ = False  # not a pytest class

    def __init__(self, host: str = "127.0.0.1") -> None:
        import trustme

        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert(host, "localhost")

    def server_context(self) -> ssl.SSLContext:
        """The TLS context an ``IdentityServer`` serves HTTPS with."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        return context

    def write_bundle(self, path: Path) -> Path:
        """The CA certificate as a PEM bundle at *path*, for ``SSL_CERT_FILE``."""
        self._ca.cert_pem.write_to_path(str(path))
        return path
