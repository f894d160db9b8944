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

from batchrunner.simulator.identity.az import install_fake_az
from batchrunner.simulator.identity.endpoints import create_app
from batchrunner.simulator.identity.issuer import (
    APP_SERVICE_API_VERSION,
    CLIENT_ID,
    COGNITIVE_SERVICES,
    FAKE_AZ,
    IMDS_API_VERSION,
    JWT_BEARER,
    TENANT_ID,
    Hit,
    IdentityLedger,
    Issued,
    TokenIssuer,
)
from batchrunner.simulator.identity.server import IdentityServer, TestCA

__all__ = [
    "APP_SERVICE_API_VERSION", "CLIENT_ID", "COGNITIVE_SERVICES", "FAKE_AZ",
    "IMDS_API_VERSION", "JWT_BEARER", "TENANT_ID", "Hit", "IdentityLedger",
    "IdentityServer", "Issued", "TestCA", "TokenIssuer", "create_app",
    "install_fake_az",
]  # fmt: skip
