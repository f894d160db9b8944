"""
Authentication: an API key, or Entra ID tokens from azure-identity.

The client takes either a key or a token provider (an async callable returning a
bearer token), so this module is the one seam that knows about credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from batchrunner.errors import AuthError
from batchrunner.settings import Settings

#: The scope of Azure OpenAI (Cognitive Services) tokens.
SCOPE = "https://cognitiveservices.azure.com/.default"


async def _nothing() -> None:
    return None


@dataclass
class Auth:
    """What authenticates the client, and how to release it at the end of the run."""

    api_key: str | None = None
    token_provider: Callable[[], Awaitable[str]] | None = None
    close: Callable[[], Awaitable[None]] = field(default=_nothing)
    #: Secrets to keep out of every log line.
    secrets: list[str] = field(default_factory=list)


async def open_auth(settings: Settings) -> Auth:
    """
    The credential for this run: the API key when one is set, else Entra ID.

    An Entra ID token is fetched here, before any row is sent, so a run with no
    working identity fails at once with exit 3.
    """
    if settings.api_key:
        return Auth(api_key=settings.api_key, secrets=[settings.api_key])
    return await _open_entra()


async def _open_entra() -> Auth:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity.aio import DefaultAzureCredential, get_bearer_token_provider

    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    provider = get_bearer_token_provider(credential, SCOPE)
    try:
        token = await provider()
    except ClientAuthenticationError as exc:
        await credential.close()
        first_line = str(exc).strip()
        msg = (
            "no API key (AZURE_OPENAI_API_KEY) and no Entra ID credential worked:\n"
            f"{first_line}\nFix: set AZURE_OPENAI_API_KEY, or run `az login`, or give"
            " the job's managed identity the 'Cognitive Services OpenAI User' role"
        )
        raise AuthError(msg) from None
    return Auth(token_provider=provider, close=credential.close, secrets=[token])
