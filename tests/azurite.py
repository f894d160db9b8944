"""
Azurite, the Azure Storage emulator, on loopback for the blob tests.

CI starts one and names it in ``TEST_AZURITE_BLOB_URL``; otherwise the session
starts ``azurite-blob`` itself (from PATH, or where ``.ci/run`` installs it).
Without the program the blob tests are skipped, unless ``TEST_REQUIRE_AZURITE``
is set (CI sets it), which makes its absence a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: Azurite's documented development account and key (the emulator's, public).
ACCOUNT = "devstoreaccount1"
KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw=="
)
_LOCAL_INSTALL = (
    Path(__file__).resolve().parent.parent
    / ".ci/.azurite/node_modules/.bin/azurite-blob"
)


def connection_string(blob_url: str) -> str:
    """The connection string of the Azurite account at *blob_url*."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint={blob_url};"
    )


def _program() -> str | None:
    found = shutil.which("azurite-blob")
    if found:
        return found
    return str(_LOCAL_INSTALL) if _LOCAL_INSTALL.exists() else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"azurite exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    pytest.fail("azurite did not start listening within 60 s")


@contextmanager
def running_azurite(tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """
    The blob endpoint of an Azurite: CI's, or one started here.

    With *tls* (certificate and key files) one is always started here, on https
    and accepting Entra ID bearer tokens (``--oauth basic``).
    """
    given = os.environ.get("TEST_AZURITE_BLOB_URL")
    if given and tls is None:
        yield given
        return
    program = _program()
    if program is None:
        reason = "azurite is not installed (npm install -g azurite, or run .ci/run)"
        if os.environ.get("TEST_REQUIRE_AZURITE"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    extra = [] if tls is None else ["--cert", str(tls[0]), "--key", str(tls[1])]
    extra += [] if tls is None else ["--oauth", "basic"]
    with tempfile.TemporaryDirectory(prefix="azurite-") as workspace:
        process = subprocess.Popen(
            [
                program, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",
                "--silent", "--disableTelemetry", *extra,
            ],
            cwd=workspace,  # anything it writes goes there, not into the repo
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_until_listening(port, process)
            scheme = "http" if tls is None else "https"
            yield f"{scheme}://127.0.0.1:{port}/{ACCOUNT}"
        finally:
            process.terminate()
            process.wait(timeout=30)
