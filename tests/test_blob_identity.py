"""
Blob storage signed in with Entra ID: the storage_account setting and the
managed identity a Container Apps job has, against Azurite on https.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import trustme
from azure.storage.blob import ContainerClient

from batchrunner.azure.blob import storage_credential
from batchrunner.cli import run
from batchrunner.simulator import SimulatorServer
from tests.azurite import running_azurite
from tests.test_cli import prompts


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def storage_token() -> str:
    """A token shaped like Entra ID's for Storage (Azurite checks claims, not keys)."""
    now = int(time.time())
    claims = {
        "aud": "https://storage.azure.com",
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/",
        "iat": now - 60, "nbf": now - 60, "exp": now + 3600,
        "oid": "00000000-0000-0000-0000-000000000002",
    }  # fmt: skip
    return f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"


@contextmanager
def identity_endpoint() -> Iterator[tuple[str, list[str]]]:
    """The Container Apps identity endpoint on loopback, and the resources asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        """Answers token requests the way the platform's endpoint does."""

        def do_GET(self) -> None:
            resource = parse_qs(urlparse(self.path).query)["resource"][0]
            asked.append(resource)
            body = json.dumps({
                "access_token": storage_token(), "token_type": "Bearer",
                "expires_on": str(int(time.time()) + 3600), "resource": resource,
            }).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/msi/token", asked
    finally:
        server.shutdown()
        server.server_close()


def test_storage_account_setting_signs_in_with_the_managed_identity(
    azure_env: SimulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With storage_account and no connection string, blobs go through Entra ID."""
    ca = trustme.CA()
    cert, key, bundle = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(bundle))
    with (
        running_azurite(tls=(cert, key)) as account,
        identity_endpoint() as (
            endpoint,
            asked,
        ),
    ):
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
        monkeypatch.setenv("IDENTITY_HEADER", "secret-header")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        monkeypatch.setenv("BATCHRUNNER_STORAGE_ACCOUNT", account)
        storage_credential.cache_clear()
        try:
            container = ContainerClient(
                account, "jobs", credential=storage_credential()
            )
            container.create_container()
            data = "".join(json.dumps(row) + "\n" for row in prompts(4)).encode()
            container.upload_blob("in.jsonl", data)
            assert run(["az://jobs/in.jsonl"]) == 0
            results = container.download_blob("in.results.jsonl").readall()
        finally:
            storage_credential.cache_clear()
    assert sorted(json.loads(line)["id"] for line in results.splitlines()) == [
        "r0", "r1", "r2", "r3",
    ]  # fmt: skip
    assert set(asked) == {"https://storage.azure.com"}
