"""
Authentication: an API key, a static Entra ID token, or Entra ID tokens fetched
by azure-identity and kept fresh by our token cache (``identity.py``).

The client takes either a key or a token provider (an async callable returning a
bearer token), so this module is the one seam that knows about credentials.

``auth:`` in the settings picks the credential (see ``settings.AuthSettings``):

====================  =============================================================
``auto`` (default)    the API key when one is set, else ``AZURE_OPENAI_AD_TOKEN``
                      (or openai<1.0's ``OPENAI_API_TYPE=azure_ad``), else ``entra``
``api_key``           ``AZURE_OPENAI_API_KEY``
``entra``             ``DefaultAzureCredential`` (its async form has no interactive
                      kinds)
``managed_identity``  ``ManagedIdentityCredential``, with ``client_id`` when the
                      identity is user-assigned
``workload_identity`` ``WorkloadIdentityCredential`` (AKS)
``azure_cli``         ``AzureCliCredential`` (``az login``)
``chain``             the listed kinds, tried in turn
====================  =============================================================

Every fetch asks a new credential, closed right after. azure-identity's
credentials keep caches of their own that answer with the cached token until
*their* refresh time and swallow refresh failures inside it, so a long-lived
credential would keep our cache from refreshing ahead and from seeing failures.
Fetches are rare (one at the start, then about one per token lifetime), so the
cost of a new credential each time does not matter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from batchrunner.azure.token_cache import Fetch, open_token_cache
from batchrunner.azure.token_expiry import Token
from batchrunner.config.sections import AuthSettings
from batchrunner.config.settings import Settings
from batchrunner.errors import AuthError

if TYPE_CHECKING:
    from azure.core.credentials import AccessTokenInfo

log = logging.getLogger("batchrunner")

#: The scope of Azure OpenAI (Cognitive Services) tokens.
SCOPE = "https://cognitiveservices.azure.com/.default"

#: Variables whose values are secrets azure-identity reads; kept out of the logs.
_SECRET_VARIABLES = ("IDENTITY_HEADER", "MSI_SECRET", "AZURE_CLIENT_SECRET")

HINTS = (
    "To fix: on a laptop, run `az login`; in Azure, give the identity the"
    " 'Cognitive Services OpenAI User' role on the Azure OpenAI resource and, for a"
    " user-assigned identity, name its client id (auth.client_id or AZURE_CLIENT_ID);"
    " or set AZURE_OPENAI_API_KEY to use a key. More:"
    " https://aka.ms/azsdk/python/identity/defaultazurecredential/troubleshoot"
)

TokenProvider = Callable[[], Awaitable[str]]


@dataclass
class Auth:
    """What authenticates the client, and what to do when the service refuses it."""

    api_key: str | None = None
    token_provider: TokenProvider | None = None
    #: Called after a 401 when tokens can be replaced: True once a new token is in
    #: place and the row may be sent again. None for keys and static tokens.
    on_unauthorized: Callable[[], Awaitable[bool]] | None = None
    #: Secrets to keep out of every log line (tokens fetched later are reported
    #: through ``open_auth``'s *on_secret*).
    secrets: list[str] = field(default_factory=list)


@asynccontextmanager
async def open_auth(
    settings: Settings,
    *,
    api_key: str | None,
    on_secret: Callable[[str], None] | None = None,
) -> AsyncIterator[Auth]:
    """
    The credential for this run, for as long as the block lasts; *api_key* is
    the endpoint's key, when it has one (the settings', or a simulator's).

    An Entra ID token is fetched here, before any row is sent, so a run with no
    working identity fails at once with exit 3 (``AuthError``).
    """
    secrets = [os.environ[name] for name in _SECRET_VARIABLES if os.environ.get(name)]
    kind = _effective_kind(settings, api_key)
    if kind == "api_key":
        if not api_key:
            msg = "auth is api_key, but AZURE_OPENAI_API_KEY is not set"
            raise AuthError(msg)
        yield Auth(api_key=api_key, secrets=[api_key, *secrets])
        return
    if kind == "ad_token":
        assert settings.ad_token
        yield _static_token(settings, settings.ad_token, secrets)
        return
    if api_key:
        log.info("auth is %s: AZURE_OPENAI_API_KEY is not used", settings.auth.kind)
    _quiet_azure_logs()
    started = False
    try:
        fetch = _fetcher(settings.auth)
        async with open_token_cache(fetch, on_token=on_secret) as cache:
            started = True
            log.info(
                "authenticated with Entra ID (%s)",
                describe(settings.auth),
                extra={"event": "auth", "auth": settings.auth.kind},
            )
            yield Auth(
                token_provider=cache.get,
                on_unauthorized=cache.refused,
                secrets=secrets,
            )
            log.debug("Entra ID token fetches: %d", cache.stats.fetches)
    except AuthError as exc:
        if started:
            raise
        raise AuthError(f"{exc}\n{HINTS}") from None


@asynccontextmanager
async def open_deployment_auths(
    settings: Settings,
    *,
    on_secret: Callable[[str], None] | None = None,
) -> AsyncIterator[dict[str, Auth]]:
    """
    Each entry of ``deployments:`` → its ``Auth``: its own key (``api_key_env``),
    else the run's auth, opened once and shared. Entra ID tokens come from one
    token cache per (scope, tenant); entries have no scope or tenant of their own,
    so every entry signed in with Entra ID shares the run's one cache (and its
    one fetch). The run's auth is not opened when every entry has a key.
    """
    keyed = {
        entry.name: Auth(api_key=entry.api_key, secrets=[entry.api_key])
        for entry in settings.deployments
        if entry.api_key
    }
    if len(keyed) == len(settings.deployments):
        yield keyed
        return
    async with open_auth(
        settings, api_key=settings.api_key, on_secret=on_secret
    ) as shared:
        auths = {entry.name: keyed.get(entry.name, shared)
                 for entry in settings.deployments}  # fmt: skip
        yield auths


def _effective_kind(settings: Settings, api_key: str | None) -> str:
    """``api_key``, ``ad_token`` or an Entra ID kind; ``auto`` resolved."""
    if settings.simulate:
        return "api_key"  # the simulator takes its own key
    kind = settings.auth.kind
    if kind != "auto":
        return kind
    if api_key:
        if settings.ad_token:
            log.info("both an API key and an Entra ID token are set; using the key")
        return "api_key"
    if settings.ad_token:
        return "ad_token"
    return "entra"


def _static_token(settings: Settings, token: str, secrets: list[str]) -> Auth:
    if settings.sources.get("ad_token") == "env OPENAI_API_KEY":
        log.warning(
            "OPENAI_API_TYPE=azure_ad with the token in OPENAI_API_KEY is openai<1.0's"
            " way: set AZURE_OPENAI_AD_TOKEN instead, or better, let batchrunner fetch"
            " and refresh tokens itself (auth: entra, managed_identity,"
            " workload_identity or azure_cli)",
            extra={"event": "deprecated"},
        )
    log.info(
        "using a fixed Entra ID token: it cannot be refreshed, so the run stops"
        " (exit 3) when the service refuses it"
    )

    async def provider() -> str:
        return token

    return Auth(token_provider=provider, secrets=[token, *secrets])


def describe(auth: AuthSettings) -> str:
    """What ``auth`` tries, in words: ``managed_identity, then azure_cli``."""
    if auth.kind in ("auto", "entra"):
        return "DefaultAzureCredential"
    text = ", then ".join(auth.chain) if auth.kind == "chain" else auth.kind
    return f"{text}, client id {auth.client_id}" if auth.client_id else text


# --- fetching a token ------------------------------------------------------------

_NO_TOKEN = "no Entra ID token"


def _fetcher(auth: AuthSettings) -> Fetch:
    """A fetch that asks a new credential for one token, then closes it."""

    async def fetch() -> Token:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            credential = _credential(auth)
        except ValueError as exc:  # azure-identity's word for a bad configuration
            raise AuthError(f"{_NO_TOKEN} ({describe(auth)}): {exc}") from None
        try:
            info: AccessTokenInfo = await credential.get_token_info(SCOPE)
        except ClientAuthenticationError as exc:
            tried = _tried(exc.message or str(exc))
            msg = f"{_NO_TOKEN} ({describe(auth)}). Tried:\n{tried}"
            raise AuthError(msg) from None
        finally:
            # A cancelled fetch still closes its HTTP session.
            with anyio.CancelScope(shield=True):
                await credential.close()
        refresh_on = float(info.refresh_on) if info.refresh_on else None
        return Token(info.token, float(info.expires_on), refresh_on)

    return fetch


def _credential(auth: AuthSettings) -> Any:
    """A new async credential for *auth* (auto and entra: DefaultAzureCredential)."""
    from azure.identity.aio import ChainedTokenCredential, DefaultAzureCredential

    if auth.kind in ("auto", "entra"):
        if auth.client_id:
            return DefaultAzureCredential(managed_identity_client_id=auth.client_id)
        return DefaultAzureCredential()
    kinds = auth.chain if auth.kind == "chain" else (auth.kind,)
    # A chain even of one: inside a chain, managed identity probes IMDS with a
    # 1 s timeout and no retries, so a machine without IMDS fails in seconds.
    return ChainedTokenCredential(*(_member(kind, auth.client_id) for kind in kinds))


def _member(kind: str, client_id: str | None) -> Any:
    from azure.identity.aio import (
        AzureCliCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    if kind == "managed_identity":
        # As DefaultAzureCredential does: AZURE_CLIENT_ID names a user-assigned one.
        chosen = client_id or os.environ.get("AZURE_CLIENT_ID")
        return ManagedIdentityCredential(client_id=chosen)
    if kind == "workload_identity":
        try:
            return WorkloadIdentityCredential(client_id=client_id)
        except ValueError as exc:  # not configured here: the chain goes on
            return _Unavailable("WorkloadIdentityCredential", str(exc))
    return AzureCliCredential()


class _Unavailable:
    """A chain member that is not configured here, reported as azure-identity does."""

    def __init__(self, name: str, reason: str) -> None:
        # ChainedTokenCredential names a member by this attribute when it has one.
        self._credential_name = name
        self._reason = reason

    async def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError(message=self._reason)

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return await self.get_token_info(*scopes)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> _Unavailable:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None


def _tried(message: str) -> str:
    """azure-identity's "Attempted credentials" list, one line each."""
    _, found, attempts = message.partition("Attempted credentials:")
    if not found:
        return "  - " + " ".join(message.split())
    attempts = attempts.split("\nTo mitigate this issue")[0]
    items = [" ".join(item.split()) for item in attempts.split("\n\t")]
    return "\n".join(f"  - {item}" for item in items if item)


def _quiet_azure_logs() -> None:
    # Our error lists every credential's failure; azure-identity's own warnings
    # would repeat them through Python's last-resort handler, unformatted.
    logging.getLogger("azure").setLevel(logging.ERROR)
