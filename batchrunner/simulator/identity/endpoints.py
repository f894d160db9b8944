"""
The fake identity endpoints themselves: App Service / Container Apps managed
identity, IMDS, Entra ID client credentials, and what the fake ``az`` asks.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from batchrunner.simulator.identity.issuer import (
    APP_SERVICE_API_VERSION,
    CLIENT_ID,
    JWT_BEARER,
    TENANT_ID,
    TokenIssuer,
)

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
