"""
Blob URLs (``az://container/path``, ``abfs://container@account.dfs…/path``) parsed
into locations: pure, so settings, shards and messages can name a blob without
loading the storage SDK.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from batchrunner.errors import UsageError

SCHEMES = ("az", "abfs", "abfss")
CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
_URL = re.compile(r"^(az|abfss?)://([^/@]+)(?:@([^/]+))?/(.+)$", re.IGNORECASE)
_CONTAINER = re.compile(r"^(?:[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]|\$root)$")


@dataclass(frozen=True)
class BlobLocation:
    """One blob: its container, its path, and the account when the URL names one."""

    scheme: str
    container: str
    blob: str
    #: ``account`` or ``account.dfs.core.windows.net`` from a ``container@…`` URL.
    account_host: str | None = None

    def __str__(self) -> str:
        at = f"@{self.account_host}" if self.account_host else ""
        return f"{self.scheme}://{self.container}{at}/{self.blob}"

    @property
    def name(self) -> str:
        """The last part of the blob's path, e.g. ``prompts.csv.gz``."""
        return PurePosixPath(self.blob).name

    def with_name(self, name: str) -> BlobLocation:
        """The blob called *name* in the same folder."""
        return replace(self, blob=str(PurePosixPath(self.blob).with_name(name)))

    @property
    def account(self) -> str | None:
        """The account name from the URL, if it gives one."""
        return self.account_host.split(".", 1)[0] if self.account_host else None


def is_blob_url(text: str) -> bool:
    """True when *text* is an ``az://``, ``abfs://`` or ``abfss://`` URL."""
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def parse_blob_url(text: str) -> BlobLocation:
    """The location *text* names; a ConfigError says what is wrong with it."""
    match = _URL.match(text.strip())
    if not match:
        msg = (
            f"{text!r} is not a blob URL; write az://CONTAINER/PATH or"
            " abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH"
        )
        raise UsageError(msg)
    scheme, container, host, blob = match.groups()
    if not _CONTAINER.match(container):
        msg = (
            f"{text!r}: {container!r} is not a container name (3-63 lower-case"
            " letters, digits and single hyphens)"
        )
        raise UsageError(msg)
    return BlobLocation(scheme.lower(), container, blob, host)


def storage_secrets(environ: Mapping[str, str]) -> list[str]:
    """The key or SAS in the connection string, to keep out of every message."""
    secrets = []
    for part in environ.get(CONNECTION_STRING, "").split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
            secrets.append(value.strip())
            # A SAS shows up in request URLs too, its signature there on its own.
            secrets += re.findall(r"(?:^|&)sig=([^&]+)", value)
    return secrets
