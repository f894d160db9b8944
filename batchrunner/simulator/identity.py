"""
Fake Azure identity endpoints on loopback, whose tokens the simulator accepts.

A test (or a demo) points azure-identity at these instead of Azure, and runs the
real credentials against them:

===================================  ==============================================
``GET /msi/token``                   App Service / Container Apps managed identity
                                     (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``)
``GET /metadata/identity/oauth2/…``  IMDS (``AZURE_POD_IDENTITY_AUTHORITY_HOST``);
                                     "no identity" unless ``imds_identity`` is set
``POST /{tenant}/oauth2/v2.0/token`` Entra ID client credentials with a federated
                                     ``client_assertion`` (workload identity), over
                                     HTTPS too: azure-identity insists on it there
``GET /az/token``                    what the fake ``az`` (``install_fake_az``) asks
===================================  ==============================================

Every token comes from one ``TokenIssuer``: a configurable lifetime, failure
injection (``fail``), revocation (``revoke``) and ``validate`` for the simulator's
``SimConfig.bearer_validator``, which answers expired, unknown and revoked tokens
with Azure's 401. ``ledger`` counts the token requests by endpoint.

    issuer = TokenIssuer(lifetime=3600)
    with IdentityServer(issuer) as identity:
        simulator.config.bearer_validator = issuer.validate
        os.environ.update(identity.app_service_environment())
"""

from __future__ import annotations

import datetime
import secrets
import socket
import ssl
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from batchrunner.simulator.background import BackgroundServer

#: The resource Azure OpenAI tokens are for (the scope without ``/.default``).
COGNITIVE_SERVICES = "https://cognitiveservices.azure.com"
APP_SERVICE_API_VERSION = "2019-08-01"
IMDS_API_VERSION = "2018-02-01"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TENANT_ID = "72f988bf-0000-4000-8000-00000000f00d"
CLIENT_ID = "5e29463d-0000-4000-8000-0000000c11e7"
FAKE_AZ = "az"


@dataclass
class Issued:
    """One token the issuer gave out."""

    token: str = field(repr=False)
    resource: str
    expires_on: int
    source: str
    client_id: str
    revoked: bool = False


@dataclass(frozen=True)
class Hit:
    """One request to a token endpoint, and how it was answered."""

    time: float
    source: str
    status: int


class IdentityLedger:
    """The token requests the endpoints received; safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits: list[Hit] = []

    def record(self, source: str, status: int) -> None:
        """Note one request to *source* answered with *status*."""
        with self._lock:
            self.hits.append(Hit(time.time(), source, status))

    def count(self, source: str | None = None, status: int | None = None) -> int:
        """Requests received, optionally only from *source* or answered *status*."""
        with self._lock:
            return sum(
                1
                for hit in self.hits
                if (source is None or hit.source == source)
                and (status is None or hit.status == status)
            )

    def fetches(self, source: str | None = None) -> int:
        """Tokens handed out (requests answered 200)."""
        return self.count(source, 200)

    def by_status(self) -> Counter[int]:
        """Requests per answer status."""
        with self._lock:
            return Counter(hit.status for hit in self.hits)


class TokenIssuer:
    """Makes, remembers, refuses and revokes tokens; thread-safe."""

    def __init__(
        self,
        lifetime: float = 3600.0,
        *,
        identity_header: str | None = None,
        federated_token: str | None = None,
        client_ids: tuple[str, ...] = (CLIENT_ID,),
    ) -> None:
        #: Seconds a new token lives; may be changed at any time.
        self.lifetime = lifetime
        #: The secret App Service hands its apps (``IDENTITY_HEADER``).
        self.identity_header = identity_header or secrets.token_urlsafe(16)
        #: The service account token in ``AZURE_FEDERATED_TOKEN_FILE``.
        self.federated_token = federated_token or "eyJhbGciOiJSUzI1NiJ9.fake-sa." + (
            secrets.token_urlsafe(24)
        )
        #: User-assigned identities that exist; others get App Service's 400.
        self.client_ids = client_ids
        #: Whether IMDS answers with tokens (a VM with an identity) or a 400.
        self.imds_identity = False
        self.ledger = IdentityLedger()
        self._lock = threading.Lock()
        self._issued: dict[str, Issued] = {}
        self._fail_status: int | None = None
        self._fail_left: int | None = None
        self._fail_skip = 0

    # --- failures ---------------------------------------------------------------

    def fail(self, status: int = 500, times: int | None = None, skip: int = 0) -> None:
        """
        Answer token requests with *status*: the next *times* of them (all, when
        None), after letting *skip* more through.
        """
        with self._lock:
            self._fail_status = status
            self._fail_left = times
            self._fail_skip = skip

    def recover(self) -> None:
        """Hand out tokens again."""
        with self._lock:
            self._fail_status = self._fail_left = None
            self._fail_skip = 0

    def take_failure(self) -> int | None:
        """The status to fail this request with, or None to serve it."""
        with self._lock:
            status = self._fail_status
            if status is None:
                return None
            if self._fail_skip > 0:
                self._fail_skip -= 1
                return None
            if self._fail_left is not None:
                self._fail_left -= 1
                if self._fail_left <= 0:
                    self._fail_status = self._fail_left = None
            return status

    # --- tokens -----------------------------------------------------------------

    def issue(self, resource: str, source: str, client_id: str = CLIENT_ID) -> Issued:
        """A new token for *resource*, living ``lifetime`` seconds from now."""
        token = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.sim." + secrets.token_urlsafe(32)
        # Whole seconds, as every token endpoint reports them.
        expires_on = int(time.time() + self.lifetime)
        issued = Issued(token, resource.rstrip("/"), expires_on, source, client_id)
        with self._lock:
            self._issued[token] = issued
        return issued

    def validate(self, token: str, resource: str = COGNITIVE_SERVICES) -> bool:
        """Whether *token* was issued for *resource*, is unexpired and not revoked."""
        with self._lock:
            issued = self._issued.get(token)
        return (
            issued is not None
            and not issued.revoked
            and issued.resource == resource
            and time.time() < issued.expires_on
        )

    def revoke(self, token: str | None = None) -> int:
        """Revoke *token*, or every token issued so far; returns how many."""
        with self._lock:
            chosen = [self._issued[token]] if token else list(self._issued.values())
            for issued in chosen:
                issued.revoked = True
        return len(chosen)

    def issued(self) -> list[Issued]:
        """Every token handed out, oldest first."""
        with self._lock:
            return list(self._issued.values())


# --- the endpoints ---------------------------------------------------------------

Handler = Callable[[web.Request], Any]


def _json(status: int, payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, status=status)


def _injected(issuer: TokenIssuer, source: str, shape: str) -> web.Response | None:
    status = issuer.take_failure()
    if status is None:
        return None
    issuer.ledger.record(source, status)
    message = f"simulated failure of the {source} token endpoint"
    if shape == "entra":
        payload = {"error": "temporarily_unavailable", "error_description": message}
        return _json(status, payload)
    if shape == "az":
        return web.Response(status=status, text=f"ERROR: {message}")
    return _json(status, {"statusCode": status, "message": message})


_NO_SUCH_IDENTITY = (
    "No managed identity found for specified ClientId/ResourceId/PrincipalId."
)


def _imds_refusal(description: str) -> web.Response:
    return _json(400, {"error": "invalid_request", "error_description": description})


def _app_service(issuer: TokenIssuer) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        failed = _injected(issuer, "app_service", "msi")
        if failed is not None:
            return failed
        query = request.query
        refusal = None
        if request.headers.get("X-IDENTITY-HEADER") != issuer.identity_header:
            refusal = (401, "The X-IDENTITY-HEADER is missing or wrong.")
        elif query.get("api-version") != APP_SERVICE_API_VERSION:
            refusal = (400, "Unsupported api-version; use 2019-08-01.")
        elif not query.get("resource"):
            refusal = (400, "The resource parameter is required.")
        elif query.get("client_id", CLIENT_ID) not in issuer.client_ids:
            refusal = (400, _NO_SUCH_IDENTITY)
        if refusal is not None:
            issuer.ledger.record("app_service", refusal[0])
            return _json(refusal[0], {"statusCode": refusal[0], "message": refusal[1]})
        client_id = query.get("client_id", CLIENT_ID)
        issued = issuer.issue(query["resource"], "app_service", client_id)
        issuer.ledger.record("app_service", 200)
        return _json(
            200,
            {
                "access_token": issued.token,
                "expires_on": str(issued.expires_on),
                "resource": issued.resource,
                "token_type": "Bearer",
                "client_id": client_id,
            },
        )

    return handle


def _imds(issuer: TokenIssuer) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        failed = _injected(issuer, "imds", "msi")
        if failed is not None:
            return failed
        query = request.query
        if request.headers.get("Metadata") != "true" or not query.get("resource"):
            issuer.ledger.record("imds", 400)
            return _imds_refusal("Required metadata header not specified")
        if not issuer.imds_identity:
            issuer.ledger.record("imds", 400)
            return _imds_refusal("Identity not found")
        client_id = query.get("client_id", CLIENT_ID)
        issued = issuer.issue(query["resource"], "imds", client_id)
        issuer.ledger.record("imds", 200)
        now = int(time.time())
        return _json(
            200,
            {
                "access_token": issued.token,
                "client_id": issued.client_id,
                "expires_in": str(issued.expires_on - now),
                "expires_on": str(issued.expires_on),
                "ext_expires_in": str(issued.expires_on - now),
                "not_before": str(now),
                "resource": issued.resource,
                "token_type": "Bearer",
            },
        )

    return handle


def _entra_error(status: int, code: str, description: str) -> web.Response:
    return _json(
        status,
        {
            "error": code,
            "error_description": description,
            "error_codes": [700016 if code == "unauthorized_client" else 700027],
            "trace_id": secrets.token_hex(8),
            "correlation_id": secrets.token_hex(8),
        },
    )


def _entra_refusal(issuer: TokenIssuer, form: Any) -> tuple[str, str] | None:
    """Why Entra ID refuses a client-credentials request, or None."""
    if form.get("grant_type") != "client_credentials":
        return ("unsupported_grant_type", "AADSTS70003: only client_credentials here")
    if form.get("client_id") not in issuer.client_ids:
        return ("unauthorized_client", "AADSTS700016: Application not found")
    assertion = form.get("client_assertion")
    if form.get("client_assertion_type") != JWT_BEARER or (
        assertion != issuer.federated_token
    ):
        return ("invalid_client", "AADSTS700027: Client assertion is not valid")
    return None


def _entra(issuer: TokenIssuer) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        failed = _injected(issuer, "entra", "entra")
        if failed is not None:
            return failed
        form = await request.post()
        refusal = _entra_refusal(issuer, form)
        if refusal is not None:
            status = 401 if refusal[0] == "invalid_client" else 400
            issuer.ledger.record("entra", status)
            return _entra_error(status, *refusal)
        scope = str(form.get("scope") or "")
        resource = scope.split()[0].removesuffix("/.default") if scope else ""
        issued = issuer.issue(resource, "entra", str(form["client_id"]))
        issuer.ledger.record("entra", 200)
        lifetime = issued.expires_on - int(time.time())
        return _json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": issued.token,
            },
        )

    return handle


def _az(issuer: TokenIssuer) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        failed = _injected(issuer, "azure_cli", "az")
        if failed is not None:
            return failed
        issued = issuer.issue(request.query.get("resource", ""), "azure_cli")
        issuer.ledger.record("azure_cli", 200)
        # As az prints it: expiresOn in local time, expires_on in epoch seconds.
        local = datetime.datetime.fromtimestamp(issued.expires_on)
        return _json(
            200,
            {
                "accessToken": issued.token,
                "expiresOn": local.strftime("%Y-%m-%d %H:%M:%S.%f"),
                "expires_on": issued.expires_on,
                "subscription": "00000000-0000-4000-8000-00000000501b",
                "tenant": request.query.get("tenant") or TENANT_ID,
                "tokenType": "Bearer",
            },
        )

    return handle


def create_app(issuer: TokenIssuer) -> web.Application:
    """The aiohttp application serving every fake endpoint of *issuer*."""
    app = web.Application()
    app.router.add_get("/msi/token", _app_service(issuer))
    app.router.add_get("/metadata/identity/oauth2/token", _imds(issuer))
    app.router.add_post("/{tenant}/oauth2/v2.0/token", _entra(issuer))
    app.router.add_get("/az/token", _az(issuer))
    return app


# --- running it ------------------------------------------------------------------


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


# --- the fake az -----------------------------------------------------------------

_AZ_SCRIPT = '''\
#!{python}
"""A fake Azure CLI: only `az account get-access-token`, served by {url}."""
import sys
import urllib.error
import urllib.parse
import urllib.request

URL = {url!r}
args = sys.argv[1:]
if args[:4] != ["account", "get-access-token", "--output", "json"] or (
    "--resource" not in args
):
    print("ERROR: this fake az only knows `account get-access-token --output json"
          " --resource R`, not: " + " ".join(args), file=sys.stderr)
    sys.exit(2)
query = {{"resource": args[args.index("--resource") + 1]}}
if "--tenant" in args:
    query["tenant"] = args[args.index("--tenant") + 1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
target = URL + "/az/token?" + urllib.parse.urlencode(query)
try:
    with opener.open(target, timeout=10) as answer:
        sys.stdout.write(answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.read().decode(), file=sys.stderr)
    sys.exit(1)
'''

_NOT_LOGGED_IN = """\
#!/bin/sh
echo "ERROR: Please run 'az login' to setup account." >&2
exit 1
"""


def install_fake_az(directory: Path, server: IdentityServer | None) -> Path:
    """
    Write an executable ``az`` into *directory* (put it first on ``PATH``) that
    prints what ``az account get-access-token --output json`` prints, with tokens
    from *server*; with no server, an ``az`` that is not logged in.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FAKE_AZ
    if server is None:
        path.write_text(_NOT_LOGGED_IN, encoding="utf-8")
    else:
        script = _AZ_SCRIPT.format(python=sys.executable, url=server.url)
        path.write_text(script, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
