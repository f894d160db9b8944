"""
Azure Blob Storage: ``az://container/path`` (and ``abfs://``, ``abfss://``) URLs,
the clients that reach them, and the errors they raise turned into ours.

Which account, in order: ``AZURE_STORAGE_CONNECTION_STRING`` (when the URL names no
other account); the account in an ``abfs://container@account.dfs.core.windows.net/…``
URL; the ``storage_account`` setting. The last two sign in with Entra ID, through
the same credential chain as the model calls (``storage_credential``).
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobClient, BlobType, ContainerClient, ExponentialRetry

from batchrunner.config.locations import (
    CONNECTION_STRING,
    SCHEMES,
    BlobLocation,
    is_blob_url,
    parse_blob_url,
    storage_secrets,
)
from batchrunner.errors import AuthError, Resumable, UsageError

#: Re-exported: every blob user finds the URL helpers here too.
__all__ = [
    "CONNECTION_STRING",
    "SCHEMES",
    "BlobLocation",
    "is_blob_url",
    "parse_blob_url",
    "storage_secrets",
]

_CHUNK = 4 << 20


@functools.cache
def storage_credential() -> TokenCredential:
    """
    The Entra ID credential for Storage: the chain the model calls use.

    A sync credential of its own, because blob transfers run outside the event loop
    that the model calls' async credential lives in; the identity is the same.
    """
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def _client_options() -> dict[str, Any]:
    # Storage's own back-off starts at 15 s, longer than the lease a run holds on
    # its results; a few quick retries keep the lease renewals on time.
    retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=4)
    return {"retry_policy": retry, "connection_timeout": 20, "read_timeout": 120}


def _connection_account(connection_string: str) -> str | None:
    for part in connection_string.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "accountname":
            return value.strip()
    return None


def _account_url(account: str, host: str | None) -> str:
    if "://" in account:
        return account.rstrip("/")  # a full endpoint from the settings
    if host and "." in host:
        # ADLS Gen2 URLs name the dfs endpoint; blobs are reached on the blob one.
        return "https://" + host.replace(".dfs.", ".blob.", 1)
    return f"https://{account}.blob.core.windows.net"


def container_client(
    location: BlobLocation, account: str | None, environ: Mapping[str, str]
) -> ContainerClient:
    """A client for *location*'s container; *account* is the setting, if any."""
    connection = environ.get(CONNECTION_STRING)
    named = location.account
    if connection and (named is None or named == _connection_account(connection)):
        return ContainerClient.from_connection_string(
            connection, location.container, **_client_options()
        )
    name = named or account
    if not name:
        msg = (
            f"no storage account for {location}: set {CONNECTION_STRING}, or"
            " 'storage_account: NAME' in the settings (BATCHRUNNER_STORAGE_ACCOUNT),"
            " or write abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH"
        )
        raise UsageError(msg)
    return ContainerClient(
        _account_url(name, location.account_host),
        location.container,
        credential=storage_credential(),
        **_client_options(),
    )


def blob_client(
    location: BlobLocation, account: str | None, environ: Mapping[str, str]
) -> BlobClient:
    """A client for the blob at *location*."""
    return container_client(location, account, environ).get_blob_client(location.blob)


@contextlib.contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Turn the storage SDK's failures while doing *what* into batchrunner errors."""
    try:
        yield
    except ClientAuthenticationError as exc:
        status = getattr(exc, "status_code", None)
        if status not in (None, 401, 403):
            raise
        msg = (
            f"{what}: storage refused our credentials ({_first_line(exc)}). Check"
            f" {CONNECTION_STRING}, or give the identity the 'Storage Blob Data"
            " Contributor' role on the account"
        )
        raise AuthError(msg) from None
    except ResourceNotFoundError as exc:
        msg = f"{what}: not found ({_code(exc)})"
        raise UsageError(msg) from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            msg = (
                f"{what}: storage refused access ({_code(exc)}); give the identity"
                " the 'Storage Blob Data Contributor' role on the account"
            )
            raise AuthError(msg) from None
        status = f"{exc.status_code} {_code(exc)}"
        msg = f"{what}: storage failed ({status}); re-run to go on"
        raise Resumable(msg) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        msg = f"{what}: cannot reach storage ({_first_line(exc)}); re-run to go on"
        raise Resumable(msg) from None


def _code(exc: HttpResponseError) -> str:
    return str(getattr(exc, "error_code", None) or exc.reason or "error")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def download(client: BlobClient, path: Path) -> int:
    """Stream the blob to *path* (a chunk at a time); return its size in bytes."""
    with path.open("wb") as out:
        return int(client.download_blob(max_concurrency=2).readinto(out))


def upload_file(client: BlobClient, path: Path, *, append: bool = False) -> None:
    """Replace the blob with the file at *path* (an Append Blob if *append*)."""
    size = path.stat().st_size
    kind = BlobType.APPENDBLOB if append else BlobType.BLOCKBLOB
    if append and size == 0:
        client.create_append_blob()  # upload_blob skips empty Append Blobs
        return
    with path.open("rb") as data:
        client.upload_blob(
            data, blob_type=kind, overwrite=True, max_concurrency=2, length=size
        )


@contextlib.contextmanager
def fetched_input(
    url: str, account: str | None, environ: Mapping[str, str]
) -> Iterator[Path]:
    """
    The input blob at *url*, downloaded to a temporary file that keeps its name.

    Rows are read twice (to validate, then to send), so a local copy is needed;
    its name keeps the suffix that tells the format (``.csv.gz`` …).
    """
    location = parse_blob_url(url)
    folder = Path(tempfile.mkdtemp(prefix="batchrunner-input-"))
    try:
        path = folder / location.name
        with storage_errors(f"reading {location}"):
            download(blob_client(location, account, environ), path)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_chunks(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The bytes of *path* from *start* to *end*, at most 4 MiB at a time."""
    with path.open("rb") as source:
        source.seek(start)
        while start < end:
            chunk = source.read(min(_CHUNK, end - start))
            if not chunk:
                return
            start += len(chunk)
            yield chunk
